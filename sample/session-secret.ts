import { Logger } from '@nestjs/common';
import type { ConfigService } from '@nestjs/config';

/**
 * Signs the sample's session cookies when SESSION_SECRET is unset, outside production: one value for every instance
 * (two samples on one Redis read each other's cookies, as the dashboard's two-instance view needs), 32 characters or
 * more (the toolkit warns below: HMAC-SHA256's key is 32 bytes), and public, since it is written here.
 */
const DEVELOPMENT_SECRET = 'nestjs-redis-toolkit-sample-development-secret-do-not-deploy';

/**
 * SESSION_SECRET, or the development secret with a line saying so. With NODE_ENV=production the sample refuses to
 * start without it: a copy of the sample deployed as it is would sign cookies with a secret anyone can read. Until
 * 2026-12-07 the default was 23 characters, so `npm start` opened with the toolkit's weak-secret warning, and
 * production ran on it too.
 */
export function sessionSecret(config: ConfigService): string {
  const secret = config.get<string>('SESSION_SECRET');
  if (secret) return secret;
  const remedy = 'set SESSION_SECRET to 32 or more random characters (e.g. openssl rand -base64 48)';
  if (config.get<string>('NODE_ENV') === 'production') {
    throw new Error(`SESSION_SECRET is not set, and NODE_ENV is production: ${remedy}`);
  }
  new Logger('Sample').log(
    "SESSION_SECRET is not set: session cookies are signed with the sample's development secret, which is public; " +
      `${remedy} anywhere but your own machine`,
  );
  return DEVELOPMENT_SECRET;
}
