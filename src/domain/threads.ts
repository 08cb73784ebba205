// ---------------------------------------------------------------------------------------------------------
// Threads (issue 20.5): where an answer goes, and which conversation a message belongs to (pure)

/** `matrix.threadReplies`: answer in the question's thread only (`inbound`), always in a thread, or never. */
export type ThreadReplies = "inbound" | "always" | "off"

export const DEFAULT_THREAD_REPLIES: ThreadReplies = "inbound"

/**
 * The thread root the answer to `eventId` is sent in (undefined: the room's main timeline).
 * - `inbound`: a question in a thread is answered in it; one in the main timeline there.
 * - `always`: as `inbound`, and a main-timeline question starts a thread rooted at itself.
 * - `off`: never in a thread, even for a question asked in one (the reply still quotes it).
 */
export const answerThread = <Id extends string>(
  mode: ThreadReplies,
  eventId: Id,
  threadId: Id | undefined
): Id | undefined => {
  switch (mode) {
    case "inbound":
      return threadId
    case "always":
      return threadId ?? eventId
    case "off":
      return undefined
  }
}

/**
 * The conversation (session history) a message belongs to: a thread has its own, apart from the room's
 * main timeline; `/new` resets the one it is sent in. With `threadReplies: "always"` the answer to a
 * main-timeline question opens a thread, so the follow-ups there continue from the question: pass the
 * thread the conversation lives in (answerThread for the question, the thread root for later messages).
 */
export const conversationKey = (roomId: string, threadId: string | undefined): string =>
  threadId === undefined ? roomId : `${roomId}|thread|${threadId}`

/** The room of a conversation key (the Sessions store and the DLQ keep room ids). */
export const roomOfConversation = (key: string): string => key.split("|thread|")[0] ?? key
