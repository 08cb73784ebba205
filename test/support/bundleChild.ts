// Crash tests run their child from one esbuild bundle of the child script and our sources; packages stay
// external and load from the project's node_modules through a symlink beside the bundle.
import { build } from "esbuild"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface BundledChild {
  /** The scratch directory holding the bundle (the test's work dir; remove it with `cleanup`). */
  readonly work: string
  readonly childJs: string
  readonly cleanup: () => void
}

export const bundleChild = async (entry: string, prefix: string): Promise<BundledChild> => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  const childJs = path.join(work, "child.mjs")
  await build({
    entryPoints: [path.resolve(entry)],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    packages: "external",
    outfile: childJs,
    absWorkingDir: process.cwd(),
    logLevel: "silent"
  })
  // Bare imports from the bundle must resolve against the project's node_modules.
  fs.symlinkSync(path.resolve("node_modules"), path.join(work, "node_modules"))
  return { work, childJs, cleanup: () => fs.rmSync(work, { recursive: true, force: true }) }
}
