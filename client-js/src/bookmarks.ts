/**
 * A session's bookmarks: the newest write position it has seen at each node.
 *
 * A bookmark is `b1.<node>.<seq>.<hlc>` (hex fields, as
 * `edgekv_replication/bookmarks.py` writes them). Bookmarks of one node are
 * ordered by seq, so the newest per node is enough; bookmarks of different
 * nodes are not comparable, so one per node is kept.
 */

/** The request and answer header that carries bookmarks, comma-separated. */
export const BOOKMARK_HEADER = "EdgeKV-Bookmark";
/** The most bookmarks a node takes in one request. */
const MAX_BOOKMARKS = 32;
const FORM = /^b1\.([0-9a-f]{1,16})\.([0-9a-f]{1,16})\.([0-9a-f]{1,16})$/;

export class BookmarkSet {
  readonly #newest = new Map<string, { seq: bigint; text: string }>();

  /** Start from a header or cookie value; parts EdgeKV did not issue are dropped. */
  constructor(value = "") {
    this.add(value);
  }

  /** Take bookmarks (one, or a comma-separated list) into account. */
  add(value: string): void {
    for (const part of value.split(",")) {
      const match = FORM.exec(part.trim());
      if (!match) continue;
      const node = BigInt(`0x${match[1]}`).toString(16);
      const seq = BigInt(`0x${match[2]}`);
      const current = this.#newest.get(node);
      if (current ? seq > current.seq : this.#newest.size < MAX_BOOKMARKS) {
        this.#newest.set(node, { seq, text: match[0] });
      }
    }
  }

  /** The header value to send: every bookmark, comma-separated ('' when none). */
  toString(): string {
    return [...this.#newest.values()].map((b) => b.text).join(",");
  }

  get size(): number {
    return this.#newest.size;
  }
}
