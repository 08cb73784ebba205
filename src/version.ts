import { readFileSync } from "node:fs"
import { findPackageJSON } from "node:module"

/** The package version, read from the nearest package.json (works from src/ under vitest and from dist/). */
export const version: string = (() => {
  const file = findPackageJSON("..", import.meta.url)
  if (file === undefined) return "0.0.0"
  const parsed = JSON.parse(readFileSync(file, "utf8")) as { version?: unknown }
  return typeof parsed.version === "string" ? parsed.version : "0.0.0"
})()
