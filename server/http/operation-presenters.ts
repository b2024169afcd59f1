import type { Operation, TargetCounts } from '../domain.js';
import type { OperationReport } from '../services/operation-service.js';

/** The JSON of GET /api/operations/:id (and, without targets, of each item of GET /api/operations). */
export function operationJson(op: Operation, counts: TargetCounts, targets?: OperationReport['targets']) {
  return {
    id: op.id,
    action: op.action,
    package: { id: op.packageId, name: op.packageName, product: op.product, version: op.version },
    allowDowngrade: op.allowDowngrade,
    state: op.state,
    createdBy: op.createdBy,
    createdAt: op.createdAt,
    finishedAt: op.finishedAt,
    retryOf: op.retryOf,
    counts,
    ...(targets ? {
      targets: targets.map((t) => ({
        server: t.serverName,
        serverId: t.serverId,
        mode: t.mode,
        state: t.target,
        message: t.message,
        versionBefore: t.versionBefore,
        versionAfter: t.versionAfter,
        startedAt: t.startedAt,
        finishedAt: t.finishedAt,
        deadlineAt: t.deadlineAt,
        lastCall: t.mode === 'mailbox' ? t.lastCall : null,
      })),
    } : {}),
  };
}

export function durationSeconds(startedAt: string | null, finishedAt: string | null): number | null {
  if (!startedAt || !finishedAt) return null;
  return Math.max(0, Math.round((Date.parse(finishedAt) - Date.parse(startedAt)) / 1000));
}

/** RFC 4180 quoting; a leading = + - @ is defused so a spreadsheet never runs a cell as a formula. */
function cell(value: string | number | null): string {
  let text = value === null ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function operationCsv(report: OperationReport): string {
  const header = ['server', 'mode', 'state', 'message', 'version_before', 'version_after', 'started_at', 'finished_at', 'duration_seconds'];
  const rows = report.targets.map((t) => [t.serverName, t.mode, t.target, t.message, t.versionBefore, t.versionAfter, t.startedAt, t.finishedAt, durationSeconds(t.startedAt, t.finishedAt)]);
  return [header, ...rows].map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n';
}
