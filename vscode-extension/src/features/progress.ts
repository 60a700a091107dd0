/**
 * Long server commands run under a cancellable notification; cancelling is not an error.
 */
import * as vscode from 'vscode';

import { isCancellation } from '../client/errors';

/** Runs `work` under a cancellable notification; resolves undefined when the user cancelled. */
export async function withProgress<T>(title: string, work: (token: vscode.CancellationToken) => Promise<T>): Promise<T | undefined> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (_progress, token) => {
    try {
      return await work(token);
    } catch (err) {
      if (token.isCancellationRequested || isCancellation(err)) return undefined;
      throw err;
    }
  });
}
