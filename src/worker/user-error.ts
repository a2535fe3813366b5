/** A failure the studio explains with advice picked by `kind` (no-model, busy, no-run, …). */
export class UserError extends Error {
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
  }
}
