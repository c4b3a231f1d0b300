/** The names a TypeScript entry point exports, read from its `export ... from` statements (following `export *`). */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface ExportNames {
  values: string[];
  types: string[];
}

export function exportNames(entry: string): ExportNames {
  const values = new Set<string>();
  const types = new Set<string>();
  const source = readFileSync(entry, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '');
  for (const m of source.matchAll(/export\s+\*\s+from\s+'([^']+)'/g)) {
    const inner = exportNames(resolve(dirname(entry), m[1].replace(/\.js$/, '.ts')));
    for (const v of inner.values) values.add(v);
    for (const t of inner.types) types.add(t);
  }
  for (const m of source.matchAll(/export\s+(type\s+)?\{([^}]*)\}/g)) {
    const allTypes = m[1] !== undefined;
    for (const raw of m[2].split(',')) {
      const item = raw.trim();
      if (item === '') continue;
      const isType = allTypes || item.startsWith('type ');
      const name = item
        .replace(/^type\s+/, '')
        .split(/\s+as\s+/)
        .pop() as string;
      (isType ? types : values).add(name);
    }
  }
  for (const m of source.matchAll(/export\s+(?:const|function|class|enum)\s+(\w+)/g)) values.add(m[1]);
  for (const m of source.matchAll(/export\s+(?:type|interface)\s+(\w+)/g)) types.add(m[1]);
  return { values: [...values].sort(), types: [...types].sort() };
}
