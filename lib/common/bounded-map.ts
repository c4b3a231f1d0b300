/**
 * Makes room for one more entry in a Map that must stay within `limit` entries: while it is full, the entry inserted
 * longest ago goes (a Map iterates in insertion order). The memos and bookkeeping maps that live as long as the app
 * call it before each new entry, so none of them grows without bound.
 */
export function makeRoom<K, V>(map: Map<K, V>, limit: number): void {
  while (map.size >= limit) {
    const oldest = map.keys().next();
    if (oldest.done) return;
    map.delete(oldest.value);
  }
}
