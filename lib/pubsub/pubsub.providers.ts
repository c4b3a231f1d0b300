import type { Provider } from '@nestjs/common';
import { PubSubService } from './pubsub.service.js';

export const PUBSUB_PROVIDERS: Provider[] = [PubSubService];
export const PUBSUB_EXPORTS = [PubSubService];
