import * as Command from "@effect/cli/Command"
import { version } from "../version.js"
import { root } from "./tree.js"

export const cli = Command.run(root, { name: "cara", version })
