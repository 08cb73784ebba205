// The seed page's example config, verbatim in shape: comments, a ${VAR} placeholder per secret.
export const SEED_CONFIG = `{
  "gateway": {
    "bind": "loopback",
    "port": 18789,
    "auth": {
      "mode": "token",
      "token": "\${CARAPACE_GATEWAY_TOKEN}"
    }
  },
  "matrix": {
    "enabled": true,
    "homeserverUrl": "https://matrix.example.com",
    "userId": "@cara:example.com",
    // First login only. The daemon removes the persisted password after
    // access-token write-back; do not manually edit it out while the daemon is
    // running. Cross-signing bootstrap also needs the password once.
    "password": "\${MATRIX_PASSWORD}",
    "encrypted": true,
    "autoJoin": {
      // Empty allowlist means NO auto-joins.
      "allowUsers": ["@you:example.com"],
      "allowServerNames": ["example.com"]
    }
  },
  "anthropic": {
    "apiKey": "\${ANTHROPIC_API_KEY}"
  },
  "agents": {
    "default": {
      "model": "anthropic:claude-sonnet-4-6"
    }
  }
}
`
