import { type CanActivate, type ExecutionContext, Injectable } from '@nestjs/common';

/**
 * The dashboard specs' stand-in for an app's operator guard: lets a request in only with `x-operator: yes` (what a
 * real app decides from its session or token).
 */
@Injectable()
export class OperatorGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    return req.headers['x-operator'] === 'yes';
  }
}
