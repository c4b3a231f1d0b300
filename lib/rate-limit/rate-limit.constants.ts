/** Metadata key of @Throttle: the list of policies of a handler or controller. */
export const THROTTLE_METADATA = 'rtk:rate-limit:throttle';
/** Metadata key of @SkipThrottle. */
export const SKIP_THROTTLE_METADATA = 'rtk:rate-limit:skip';
