// ESLint flat config. Formatting is @effect/eslint-plugin's dprint rule with the settings the Effect-TS
// repositories use; the type-aware promise rules catch the promise nobody awaits (how a daemon loses an
// error); src/ additionally keeps functions to a screen and imports subpaths instead of the heavy barrels.
// `npm test` runs this (scripts/test.mjs); `npx eslint --fix .` applies the formatting.
import effect from "@effect/eslint-plugin"
import tseslint from "typescript-eslint"

/** dprint settings: two-space indent, 120 columns, no semicolons, double quotes, no trailing commas. */
const dprint = {
  indentWidth: 2,
  lineWidth: 120,
  semiColons: "asi",
  quoteStyle: "alwaysDouble",
  trailingCommas: "never",
  operatorPosition: "maintain",
  "arrowFunction.useParentheses": "force"
}

/** Barrels that load far more than one needs (API-docs UIs, every platform module): import the subpath. */
const barrels = ["@effect/platform", "@effect/platform-node", "@effect/cli", "@effect/sql"].map((name) => ({
  name,
  message: `import the subpath (e.g. "${name}/ModuleName") instead of the ${name} barrel`
}))

export default [
  {
    ignores: ["dist/**", "coverage/**", ".venv-synapse/**", ".cache/**", "node_modules/**"]
  },
  ...effect.configs.dprint,
  {
    files: ["**/*.{ts,js,mjs,cjs}"],
    rules: { "@effect/dprint": ["error", { config: dprint }] }
  },
  {
    files: ["**/*.ts"],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname }
    },
    plugins: { "@typescript-eslint": tseslint.plugin },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error"
    }
  },
  {
    files: ["src/**/*.ts"],
    rules: {
      "max-lines-per-function": ["error", { max: 120, skipBlankLines: true, skipComments: true }],
      "no-restricted-imports": ["error", { paths: barrels }]
    }
  }
]
