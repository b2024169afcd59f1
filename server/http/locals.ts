import type { Session } from '../domain.js';

// What the middleware puts on res.locals, typed for every handler and view.
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Locals {
      session?: Session | null;
      sessionId?: string;
      user?: string;
      authMethod?: 'session' | 'basic';
      csrfToken?: string;
      /** The menu entry to highlight. */
      page?: string;
    }
  }
}

export {};
