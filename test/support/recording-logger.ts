import type { LoggerService } from '@nestjs/common';

/** A Nest logger that keeps what the toolkit logs as errors and as warnings (`log` lines are dropped). */
export function recordingLogger(): { errors: string[]; warnings: string[]; logger: LoggerService } {
  const errors: string[] = [];
  const warnings: string[] = [];
  const logger: LoggerService = {
    log: () => undefined,
    error: (m: unknown) => void errors.push(String(m)),
    warn: (m: unknown) => void warnings.push(String(m)),
  };
  return { errors, warnings, logger };
}
