// `npm run docs:cli`: writes docs/cli.md from the command tree (src/cli/docs.ts).
import { Effect } from "effect"
import * as fs from "node:fs"
import { renderCliDocs } from "../src/cli/docs.js"

fs.writeFileSync("docs/cli.md", `${Effect.runSync(renderCliDocs)}\n`)
