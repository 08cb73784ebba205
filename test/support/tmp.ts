// One temp-dir helper for the tests: a fresh directory under the OS temp dir that is removed afterwards, so no
// test file keeps its own mkdtemp + rmSync pair (or forgets the rmSync).
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, onTestFinished } from "vitest"

const create = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix))
const remove = (dir: string): void => fs.rmSync(dir, { recursive: true, force: true })

/**
 * A fresh directory, removed when the current test has finished (after its afterEach hooks), or, called while
 * a file or describe block is collected (`const dir = tmpDir()` at its top), when that block's tests are done.
 * Called in a beforeEach it belongs to that test. Not in a beforeAll (vitest has no hook to attach it to there):
 * create it at the top of the describe block instead, or use `scopedTmpDir`.
 */
export const tmpDir = (prefix = "cara-test-"): string => {
  const dir = create(prefix)
  try {
    onTestFinished(() => remove(dir))
  } catch {
    afterAll(() => remove(dir))
  }
  return dir
}

/** A fresh directory for the enclosing scope (it.scoped, a Layer.scoped), removed when the scope closes. */
export const scopedTmpDir = (prefix = "cara-test-"): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.sync(() => create(prefix)), (dir) => Effect.sync(() => remove(dir)))
