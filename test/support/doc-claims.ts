import type { OptionShape } from '../../lib/common/option-checks.js';

/** Every name written as code in a Markdown page: inline `code` spans and fenced blocks, joined (the claims specs). */
export function codeText(markdown: string): string {
  const fenced = markdown.match(/```[\s\S]*?```/g) ?? [];
  const inline = markdown.replace(/```[\s\S]*?```/g, '').match(/`[^`\n]+`/g) ?? [];
  return [...fenced, ...inline].join('\n');
}

/** The option paths of a key shape (`retry.count`, `insurance.divideLimitBy`, ...), nested objects (not arrays). */
export function optionPaths(shape: OptionShape, at = ''): string[] {
  return Object.entries(shape).flatMap(([key, sub]) => [
    at + key,
    ...(typeof sub === 'object' && !Array.isArray(sub) ? optionPaths(sub as OptionShape, `${at + key}.`) : []),
  ]);
}

/** The last segment of an option path. */
export const leaf = (path: string): string => path.split('.').pop() as string;
