import { Logger } from '@nestjs/common';

/**
 * A warning that is logged at most once per interval, with the number of occurrences since the last one:
 * when Redis is down every request fails the same way, and one line a second says it all.
 */
export class ThrottledWarning {
  private lastLoggedAt = 0;
  private suppressed = 0;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  warn(message: string): void {
    const now = Date.now();
    if (now - this.lastLoggedAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    const extra = this.suppressed > 0 ? ` (${this.suppressed} more since the last warning)` : '';
    this.lastLoggedAt = now;
    this.suppressed = 0;
    this.logger.warn(message + extra);
  }
}
