import { ValidationError } from '../../lib/errors.js';
import { isValidVersion } from '../../lib/version.js';
import { DEFAULT_PRODUCT, DEFAULT_PRODUCT_VERSION, type MasterConfig } from '../config.js';
import type { SettingsRepo } from '../db/settings-repo.js';
import type { Logger } from '../../lib/logger.js';
import { hashToken, randomToken, tokenMatches } from '../secrets.js';

export interface ProductInfo {
  product: string;
  version: string;
}

/**
 * The master's own product and version (updated by hand on the master, then propagated), and the
 * enrollment token slaves present the first time they call. Only the token's hash is stored: it
 * is shown once when generated, like an API key.
 */
export class SettingsService {
  constructor(private readonly settings: SettingsRepo, private readonly log: Logger) {}

  /** Applies what the command line or environment says; returns a newly generated token, if any. */
  async init(config: Pick<MasterConfig, 'product' | 'productVersion' | 'enrollToken'>): Promise<{ generatedEnrollToken: string | null }> {
    if (config.product !== null) await this.settings.set('product', config.product);
    else await this.settings.insertIfAbsent('product', DEFAULT_PRODUCT);
    if (config.productVersion !== null) await this.settings.set('product_version', config.productVersion);
    else await this.settings.insertIfAbsent('product_version', DEFAULT_PRODUCT_VERSION);

    if (config.enrollToken !== null) {
      await this.settings.set('enroll_token_hash', hashToken(config.enrollToken));
      await this.settings.set('enroll_token_source', 'environment');
      return { generatedEnrollToken: null };
    }
    if ((await this.settings.get('enroll_token_hash')) !== null) return { generatedEnrollToken: null };
    // Masters starting together on a new database: only the one that stored its token prints it.
    const token = randomToken(24);
    if (!(await this.settings.insertIfAbsent('enroll_token_hash', hashToken(token)))) return { generatedEnrollToken: null };
    await this.settings.set('enroll_token_source', 'generated');
    this.log.info('enrollment token generated', { user: 'system' });
    return { generatedEnrollToken: token };
  }

  async productInfo(): Promise<ProductInfo> {
    return {
      product: (await this.settings.get('product')) ?? DEFAULT_PRODUCT,
      version: (await this.settings.get('product_version')) ?? DEFAULT_PRODUCT_VERSION,
    };
  }

  async setProductInfo(info: ProductInfo, user: string): Promise<ProductInfo> {
    if (!/^[a-z0-9._-]{1,64}$/.test(info.product)) throw new ValidationError('The product must be 1 to 64 of a-z 0-9 . _ -');
    if (!isValidVersion(info.version)) throw new ValidationError('The version must be 1 to 4 dot-separated numbers, e.g. 6.1.2');
    await this.settings.set('product', info.product);
    await this.settings.set('product_version', info.version);
    this.log.info('master product changed', { user, product: info.product, version: info.version });
    return info;
  }

  /** Replaces the enrollment token; the caller shows the returned token once. */
  async newEnrollToken(user = 'system'): Promise<string> {
    const token = randomToken(24);
    await this.settings.set('enroll_token_hash', hashToken(token));
    await this.settings.set('enroll_token_source', 'generated');
    this.log.info('enrollment token generated', { user });
    return token;
  }

  async enrollTokenSource(): Promise<'environment' | 'generated' | null> {
    return (await this.settings.get('enroll_token_source')) as 'environment' | 'generated' | null;
  }

  async enrollTokenMatches(token: string): Promise<boolean> {
    const stored = await this.settings.get('enroll_token_hash');
    return stored !== null && tokenMatches(token, stored);
  }
}
