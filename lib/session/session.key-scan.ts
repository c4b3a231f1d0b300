import { scanKeys } from '../common/bulk-keys.js';
import type { RedisClient } from '../common/lua-script.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';

/** The session keys found with SCAN on every master (never KEYS), in pages. */
export class SessionKeyScan {
  private readonly sessionHead: string;

  constructor(
    private readonly client: RedisClient,
    private readonly keys: KeyBuilder,
  ) {
    this.sessionHead = keys.tagHead(FEATURES.session);
  }

  /** Pages of session ids. */
  async *ids(count = 500): AsyncGenerator<string[]> {
    const pattern = `${KeyBuilder.globEscape(this.sessionHead)}*}`;
    for await (const found of scanKeys(this.client, pattern, count)) {
      const ids = found
        .map((k) => k.slice(this.sessionHead.length, -1))
        .filter((id) => !id.includes('{') && !id.includes('}'));
      if (ids.length > 0) yield ids;
    }
  }

  /**
   * Pages of user index keys (for clear()): `<prefix>sess:user:{*`, the brace included, so the keys of an app whose
   * keyPrefix is ours + `sess:user:` (which holds no brace) are never taken for ours.
   */
  userIndexKeys(count = 500): AsyncGenerator<string[]> {
    return scanKeys(this.client, `${KeyBuilder.globEscape(this.keys.tagHead(FEATURES.sessionUserIndex))}*`, count);
  }
}
