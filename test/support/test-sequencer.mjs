// `npm test` runs the suite as three jest processes (`--shard=1/3` to `--shard=3/3`, scripts/test.mjs). Jest's own
// shard cuts the files into parts of equal count by a hash of their paths, which can put most of the slow files (the
// cluster and Sentinel ones take 10-60 s, most files under 2 s) on one side. This one splits by time instead: the
// seconds each file took in a recorded CI run (test-durations.json; a file not in it counts as the median), the
// longest first, each to the shard with less time so far. Every process computes the same split from the same list.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import Sequencer from '@jest/test-sequencer';

const durations = JSON.parse(readFileSync(new URL('./test-durations.json', import.meta.url), 'utf8'));
const known = Object.values(durations).sort((a, b) => a - b);
const median = known.length > 0 ? known[Math.floor(known.length / 2)] : 1;

export default class TimeBalancedSequencer extends Sequencer {
  shard(tests, { shardIndex, shardCount }) {
    const weighed = tests
      .map((test) => {
        const path = relative(test.context.config.rootDir, test.path).split('\\').join('/');
        return { test, path, seconds: durations[path] ?? median };
      })
      .sort((a, b) => b.seconds - a.seconds || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const totals = new Array(shardCount).fill(0);
    const mine = [];
    for (const { test, seconds } of weighed) {
      let shard = 0;
      for (let i = 1; i < shardCount; i++) if (totals[i] < totals[shard]) shard = i;
      totals[shard] += seconds;
      if (shard === shardIndex - 1) mine.push(test);
    }
    return mine;
  }
}
