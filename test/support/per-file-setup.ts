// Runs in every test file before its own hooks: each file starts on empty shared servers, so no file depends on
// what another left behind. Within a file, tests keep their own key spaces (random suffixes) instead of flushing,
// so a file's beforeAll fixtures survive from test to test.
import { noteHandles, trackingHandles, trackTimers } from './open-handles.js';
import { flushShared } from './shared-servers.js';

beforeAll(flushShared);

if (trackingHandles) {
  const file = expect.getState().testPath ?? '?';
  const reportTimers = trackTimers(file);
  beforeAll(() => noteHandles((previous) => `after ${previous} (seen before ${file})`));
  afterAll(() => {
    noteHandles(() => `in ${file}`, file);
    reportTimers();
  });
}
