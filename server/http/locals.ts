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
      /** Enrollments waiting for the administrator (shown in the menu). */
      pendingServers?: number;
      /** The exact bytes of an agent call's body (its signature covers them). */
      agentRawBody?: Buffer;
      /** Whom the answer to an agent call is for, once known: it is then signed. */
      agentAnswer?: import('./agent-json.js').AnswerContext;
      /** The nonce and key an agent call named: what its answer is bound to. */
      agentCall?: { path: string; nonce: string; agent: string };
      /** The key of the agent's session (its calls and answers carry MACs with it). */
      agentSessionKey?: Buffer;
      /** The server an agent call authenticated as. */
      agentServer?: import('../domain.js').SlaveRecord;
      /** How an enrollment authenticated (checked before its body is read). */
      enrollCredential?: import('../services/admission-service.js').EnrollCredential;
    }
  }
}

export {};
