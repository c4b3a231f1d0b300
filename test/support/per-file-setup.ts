// Runs in every test file before its own hooks: each file starts on empty shared servers, so no file depends on
// what another left behind. Within a file, tests keep their own key spaces (random suffixes) instead of flushing,
// so a file's beforeAll fixtures survive from test to test.
import { flushShared } from './shared-servers.js';

beforeAll(flushShared);
