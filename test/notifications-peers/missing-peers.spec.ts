import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * An app without an optional peer: a child process whose module hooks hide the peer (its import fails with Node's own
 * ERR_MODULE_NOT_FOUND, as in an app that never installed it) and load lib/ from its TypeScript sources (transpiled
 * with @swc/core as the jest transform does).
 */
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const lib = pathToFileURL(join(repo, 'lib')).href;

/** The module hooks (test/support/ts-hooks.mjs): TypeScript sources, and the packages in RTK_HIDE hidden. */
const HOOKS = pathToFileURL(join(repo, 'test/support/ts-hooks.mjs')).href;

/** Runs `script` (an ES module, cwd the repo) with `hide` hidden; resolves to the JSON it prints last. */
function runHidden(hide: string[], script: string): Promise<{ name?: string; code?: string; message?: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--no-warnings', '--import', HOOKS, '--input-type=module', '-e', script], {
      cwd: repo,
      env: { ...process.env, RTK_HIDE: hide.join(',') },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    child.on('close', () => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try {
        done(JSON.parse(last));
      } catch {
        fail(new Error(`no result from the child\nstdout: ${out}\nstderr: ${err}`));
      }
    });
  });
}

const report = `(e) => console.log(JSON.stringify({ name: e?.constructor?.name, code: e?.code, message: e?.message }))`;

/** An AppModule importing forRoot({ notificationsGateway: true }) with lazyConnect (no Redis needed). */
const GATEWAY_MODULE = `
const { RedisToolkitModule } = await import('${lib}/index.ts');
const { NestFactory } = await import('@nestjs/core');
const { Module } = await import('@nestjs/common');
class AppModule {}
Module({ imports: [RedisToolkitModule.forRoot({ connection: { url: 'redis://127.0.0.1:1' }, lazyConnect: true,
  notificationsGateway: true })] })(AppModule);
`;

/** GATEWAY_MODULE created with abortOnError off. */
const GATEWAY_APP = `
import 'reflect-metadata';
${GATEWAY_MODULE}
try {
  const app = await NestFactory.createApplicationContext(AppModule, { abortOnError: false, logger: false });
  await app.close();
  console.log(JSON.stringify({ name: 'started' }));
} catch (e) { (${report})(e); }
process.exit(0);
`;

describe('notificationsGateway: true without its optional peers', () => {
  it.each([['@nestjs/websockets'], ['socket.io']])(
    'without %s: a typed MissingPeerError at startup naming the packages to install',
    async (missing) => {
      const result = await runHidden([missing], GATEWAY_APP);
      // before: ERR_MODULE_NOT_FOUND "Cannot find package '@nestjs/websockets' imported from .../notifications.module"
      expect(result.name).toBe('MissingPeerError');
      expect(result.code).toBe('E_MISSING_PEER');
      expect(result.message).toContain('notificationsGateway');
      expect(result.message).toContain(`missing: ${missing}`);
      expect(result.message).toContain('npm install @nestjs/websockets @nestjs/platform-socket.io socket.io');
    },
    30_000,
  );

  it('without all three: every missing one is named, @nestjs/platform-socket.io (which Nest loads) too', async () => {
    const result = await runHidden(['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'], GATEWAY_APP);
    // before: 'missing: @nestjs/websockets, socket.io', the install line naming the third
    expect(result.name).toBe('MissingPeerError');
    expect(result.message).toContain('missing: @nestjs/websockets, @nestjs/platform-socket.io, socket.io)');
  }, 30_000);

  it('with the peers installed the app starts (so the check above can fail)', async () => {
    expect(await runHidden([], GATEWAY_APP)).toEqual({ name: 'started' });
  }, 30_000);

  it('the root entry point loads without any optional peer', async () => {
    const peers = ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io', '@opentelemetry/api'];
    const result = await runHidden(
      [...peers, '@nestjs/terminus', 'express-session'],
      `try { const m = await import('${lib}/index.ts'); console.log(JSON.stringify({ name: typeof m.RedisToolkitModule }));
       } catch (e) { (${report})(e); }`,
    );
    expect(result).toEqual({ name: 'function' });
  }, 30_000);
});

describe('pnpm / Yarn PnP: an optional peer the app did not add', () => {
  it('RedisSessionStore without express-session: MissingPeerError (E_MISSING_PEER) naming it and the install line', async () => {
    const result = await runHidden(
      ['express-session'],
      `const { RedisSessionStore } = await import('${lib}/index.ts');
       try { new RedisSessionStore({ client: {} }); console.log(JSON.stringify({ name: 'constructed' })); }
       catch (e) { (${report})(e); }`,
    );
    // before: InvalidOptionsError (E_INVALID_OPTIONS) 'RedisSessionStore needs the express-session package'
    expect(result).toEqual({
      name: 'MissingPeerError',
      code: 'E_MISSING_PEER',
      message:
        'RedisSessionStore needs the optional peer express-session (missing: express-session). ' +
        'Install it: npm install express-session',
    });
  }, 30_000);

  it('notificationsGateway without its peers: NestFactory.create rejects, no unhandled rejection first', async () => {
    const result = await runHidden(
      ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'],
      `import 'reflect-metadata';
       const unhandled = [];
       process.on('unhandledRejection', (e) => unhandled.push(e?.constructor?.name));
       ${GATEWAY_MODULE}
       let rejected;
       try { await NestFactory.create(AppModule, { abortOnError: false, logger: false }); }
       catch (e) { rejected = e?.constructor?.name; }
       console.log(JSON.stringify({ name: rejected, message: unhandled.join() }));
       process.exit(0);`,
    );
    // before: { name: 'MissingPeerError', message: 'MissingPeerError' }: the rejection was unhandled first, which
    // (Node's default --unhandled-rejections=throw) ends the app before its own catch runs
    expect(result).toEqual({ name: 'MissingPeerError', message: '' });
  }, 30_000);
});

// A subpath's ES module index statically imports its peer: without it the import fails while Node links the module
// graph, before any code of the package runs. So the package's exports point at a gate that throws MissingPeerError
// first (lib/*/entry.ts for import, entry.cts for require); test/package/run.mjs checks both on the packed package.
describe("a subpath's ES module index without its optional peer: Node names the package, nothing of ours runs", () => {
  it.each([
    ['notifications/index.ts', '@nestjs/websockets'],
    ['otel/index.ts', '@opentelemetry/api'],
    ['terminus/index.ts', '@nestjs/terminus'],
  ])(
    '%s without %s',
    async (entry, peer) => {
      const result = await runHidden(
        [peer],
        `import 'reflect-metadata'; try { await import('${lib}/${entry}'); console.log(JSON.stringify({ name: 'loaded' }));
       } catch (e) { (${report})(e); }`,
      );
      expect(result.code).toBe('ERR_MODULE_NOT_FOUND');
      expect(result.message).toContain(`'${peer}'`);
    },
    30_000,
  );
});
