/**
 * The two error tests every request site shares: "no server to ask" and "the request was cancelled".
 */
import * as vscode from 'vscode';
import { LSPErrorCodes, ResponseError } from 'vscode-languageclient/node';

/** Thrown by a request while the server is stopped or failed; the command's error report says why. */
export class NotRunning extends Error {
  constructor() {
    super('The MoLE server is not running.');
  }
}

/** True for a request the user or the client cancelled: nothing to report then. */
export function isCancellation(err: unknown): boolean {
  if (err instanceof ResponseError) return err.code === LSPErrorCodes.RequestCancelled;
  return err instanceof vscode.CancellationError;
}
