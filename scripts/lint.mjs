// Project rules tsc cannot check. Each rule names the files it found; exit 1 on any finding.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function files(dir, ext) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return files(path, ext);
    return path.endsWith(ext) ? [path] : [];
  });
}

const stripComments = (src) => src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');

const rules = [
  { name: 'no `any` in the library', dirs: ['lib'], ext: '.ts', re: /(:\s*any\b|\bas any\b|<any>|any\[\])/ },
  {
    name: 'no KEYS command (use SCAN)',
    dirs: ['lib'],
    ext: '.ts',
    re: /\b(client|redis|node|master|connection)\.keys\s*\(|['"]keys['"]/i,
  },
  { name: 'no KEYS command in Lua (use SCAN)', dirs: ['lib'], ext: '.lua', re: /redis\.call\(\s*['"]keys['"]/i },
  // lib/testing/ is test tooling shipped to users (`nestjs-redis-toolkit/testing`): its servers are flushed between tests.
  {
    name: 'no FLUSHALL/FLUSHDB outside tests',
    dirs: ['lib', 'sample'],
    skip: 'lib/testing/',
    ext: '.ts',
    re: /flushall|flushdb/i,
  },
  { name: 'no console.log in the library (use Nest Logger)', dirs: ['lib'], ext: '.ts', re: /console\.log\(/ },
  // Biome wraps code at 120 but not comments or strings; keep those in the width too.
  { name: 'no line over 120 characters in the library', dirs: ['lib'], ext: '.ts', re: /^.{121,}$/, raw: true },
];

let failed = 0;
for (const rule of rules) {
  for (const dir of rule.dirs) {
    for (const file of files(dir, rule.ext).filter((f) => !rule.skip || !f.startsWith(rule.skip))) {
      const source = readFileSync(file, 'utf8');
      (rule.raw ? source : stripComments(source)).split('\n').forEach((line, i) => {
        if (rule.re.test(line)) {
          failed++;
          console.error(`${file}:${i + 1}: ${rule.name}: ${line.trim()}`);
        }
      });
    }
  }
}
// A global setImmediate that a test faked (jest.useFakeTimers) would hold every end-of-turn flush until the test
// advances its clock: the library takes Node's own, from lib/common/real-timers.ts.
for (const file of files('lib', '.ts')) {
  const source = stripComments(readFileSync(file, 'utf8'));
  const imported = /import \{[^}]*\bsetImmediate\b[^}]*\} from '[./]*(common\/)?real-timers\.js'/.test(source);
  if (/\bsetImmediate\(/.test(source) && !imported && !file.endsWith('real-timers.ts')) {
    failed++;
    console.error(`${file}: setImmediate not imported from lib/common/real-timers.ts (fake timers would hold it)`);
  }
}
if (failed) process.exit(1);
console.log('lint: ok');
