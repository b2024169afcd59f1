import { Router } from 'express';
import { ValidationError } from '../../lib/errors.js';
import { clientOf } from '../http/auth-middleware.js';
import { passwordChangeSchema, productSchema } from '../http/schemas.js';
import { parse } from '../http/validation.js';
import type { AuthService } from '../services/auth-service.js';
import type { SettingsService } from '../services/settings-service.js';

/** The master's product and version, the enrollment token and the admin password. */
export function settingsRouter(deps: { settings: SettingsService; auth: AuthService }): Router {
  const { settings, auth } = deps;
  const router = Router();

  async function render(res: import('express').Response, extra: Record<string, unknown> = {}, status = 200) {
    res.status(status).render('settings', {
      page: 'settings',
      product: await settings.productInfo(),
      enrollSource: await settings.enrollTokenSource(),
      newToken: null,
      message: null,
      error: null,
      ...extra,
    });
  }

  router.get('/settings', (_req, res) => render(res));

  router.get('/api/master', async (_req, res) => {
    res.json(await settings.productInfo());
  });

  router.put('/api/master', async (req, res) => {
    const input = parse(productSchema, req.body);
    res.json(await settings.setProductInfo(input, res.locals.user ?? 'admin'));
  });

  router.post('/settings/product', async (req, res) => {
    try {
      const input = parse(productSchema, req.body);
      const saved = await settings.setProductInfo(input, res.locals.user ?? 'admin');
      await render(res, { message: `The master now runs ${saved.product} ${saved.version}` });
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      await render(res, { error: err.message }, 422);
    }
  });

  router.post('/settings/enroll-token', async (_req, res) => {
    const token = await settings.newEnrollToken(res.locals.user ?? 'admin');
    await render(res, { newToken: token });
  });

  router.post('/settings/password', async (req, res) => {
    try {
      const input = parse(passwordChangeSchema, req.body);
      if (!(await auth.changePassword(input.current, input.next, { ...clientOf(req), keepSessionId: res.locals.sessionId }))) throw new ValidationError('The current password is wrong');
      await render(res, { message: 'The admin password was changed' });
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      await render(res, { error: err.message }, 422);
    }
  });

  return router;
}
