// The access token the Model step's hub downloads use (gated or private models, and adapters opened
// by hub id): one value for both, held in memory for this page only — never saved, never logged,
// shown masked. (Pushing has its own write token, kept by the Export step's push form.)
export const hubToken = $state({ value: '' });

/** The token to send, or null when none was given. */
export function hubTokenOrNull(): string | null {
  return hubToken.value.trim() || null;
}
