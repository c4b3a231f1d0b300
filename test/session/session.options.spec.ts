import { InvalidOptionsError } from '../../lib/index.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { resolveSessionOptions } from '../../lib/session/session.options.js';

function problemsOf(raw: unknown): string {
  const problems = new OptionProblems();
  resolveSessionOptions(raw as never, problems);
  try {
    problems.throwIfAny();
    return '';
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidOptionsError);
    return (err as Error).message;
  }
}

describe('session options', () => {
  it('fills in defaults', () => {
    const o = resolveSessionOptions(undefined, new OptionProblems());
    expect(o).toMatchObject({ ttl: 86_400_000, rolling: true, maxAgeMs: 30 * 86_400_000, tombstoneMs: 60_000 });
    expect(o.cookie).toMatchObject({
      name: 'rtk.sid',
      secrets: [],
      httpOnly: true,
      sameSite: 'lax',
      path: '/',
      maxAge: undefined,
    });
    expect(resolveSessionOptions({ cookie: { secret: 'a' } }, new OptionProblems()).cookie.secrets).toEqual(['a']);
  });

  it('names every wrong option by its path', () => {
    const message = problemsOf({
      ttl: 0,
      maxAgeMs: 'long',
      rolling: 'yes',
      tombstoneMs: -1,
      cookie: { name: 'bad name;', secret: ['', 3], secure: 'sometimes', sameSite: 'none', httpOnly: 1, maxAge: -5 },
    });
    for (const path of [
      'session.ttl',
      'session.maxAgeMs',
      'session.rolling',
      'session.tombstoneMs',
      'session.cookie.name',
      'session.cookie.secret',
      'session.cookie.secure',
      'session.cookie.httpOnly',
      'session.cookie.maxAge',
    ]) {
      expect(message).toContain(`  - ${path} `);
    }
    expect(problemsOf({ cookie: { sameSite: 'none', secure: false } })).toContain(
      "session.cookie.sameSite 'none' needs secure",
    );
    expect(problemsOf({ ttl: 10_000, maxAgeMs: 5_000 })).toContain(
      'session.maxAgeMs must not be shorter than session.ttl',
    );
    expect(problemsOf({ cookie: 'x' })).toContain('session.cookie must be an object');
    expect(problemsOf({ cookie: { sameSite: 'none', secure: 'auto', secret: ['a', 'b'] } })).toBe('');
  });
});
