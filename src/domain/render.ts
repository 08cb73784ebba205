/**
 * The Matrix send path's rendering and splitting. The hand-written renderer that lived here is gone: Markdown
 * is rendered by src/domain/markdown.ts (markdown-it with raw HTML off, then sanitize-html restricted to the
 * `org.matrix.custom.html` subset), and long answers are split there without cutting a code block or table.
 * Re-exported under the old names so the existing importers keep working.
 */
export {
  chunkContents,
  MAX_CHUNK_BYTES,
  MAX_CONTENT_BYTES,
  messageContent,
  renderMarkdown,
  splitMessage
} from "./markdown.js"
