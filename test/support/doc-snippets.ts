/** Code blocks taken from README.md and docs/ by their marker comment, so tests run exactly what users copy. */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The fenced block (any language) right after `<!-- name: ... -->` in `file` (relative to the repo root). */
export function docSnippet(file: string, name: string): string {
  const text = readFileSync(join(repoRoot, file), 'utf8');
  const marker = text.indexOf(`<!-- ${name}:`);
  if (marker < 0) throw new Error(`${file} has no <!-- ${name}: ... --> marker`);
  const block = /```\w*\n([\s\S]*?)\n```/.exec(text.slice(marker));
  if (!block?.[1]) throw new Error(`${file}: no \`\`\`ts block after the ${name} marker`);
  return `${block[1]}\n`;
}
