/**
 * How the connector recognises its own Live Response actions: the action's comment (shown in the
 * action centre, returned as `requestorComment`) ends with a marker naming the job (incident id +
 * artifact id). An action without our marker at its end is never adopted, cancelled or otherwise
 * touched: another tool or an analyst started it.
 */

export interface JobKey {
  incidentId: string;
  artifactId: string;
}

/** The stable id under which a job holds its device and session leases (the same after a redelivery). */
export function leaseHolderOf(job: JobKey): string {
  return `${job.incidentId}/${job.artifactId}`;
}

export function actionMarker(job: JobKey): string {
  return `[anyrun-job:${job.incidentId}/${job.artifactId}]`;
}

/** Free text that goes into the comment before the marker: no brackets (no fake marker), short. */
function plain(text: string, max: number): string {
  const cleaned = text.replace(/[\u0000-\u001f\u007f[\]]/g, " ").replace(/\s+/g, " ").trim();
  return cleaned.length > max ? `${cleaned.slice(0, max - 1)}…` : cleaned;
}

export function collectComment(job: JobKey & { fileName: string; incidentLabel: string }): string {
  return `ANY.RUN connector: collect ${plain(job.fileName, 120)} for Sentinel incident ${plain(job.incidentLabel, 80)} ${actionMarker(job)}`;
}

/** True only for a Live Response action whose comment ends with this job's marker. */
export function isOwnAction(action: { type?: string | null; requestorComment?: string | null }, job: JobKey): boolean {
  if (action.type !== undefined && action.type !== null && action.type !== "LiveResponse") return false;
  return typeof action.requestorComment === "string" && action.requestorComment.trimEnd().endsWith(actionMarker(job));
}
