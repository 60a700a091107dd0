/**
 * Error messages with buttons: why the server could not start or stopped (once per start attempt,
 * with Retry / Show Logs / pip install …), and why a command failed.
 */
import * as vscode from 'vscode';
import { ErrorCodes, ResponseError } from 'vscode-languageclient/node';

import { ArgumentError } from '../commands';
import { ACTION_LABELS, pipInstallCommandLine, type StartupAction } from '../python';
import { SECTION } from '../settings';
import { NotRunning, isCancellation } from './errors';
import type { MoleServer } from './server';

/** What the startup actions act on. */
export interface ProblemTarget {
  restart(byUser: boolean): Promise<void>;
  /** The interpreter of the last start attempt, if one was resolved. */
  pythonCommand(): string | undefined;
}

/** Shows at most one startup error per start attempt and runs the button the user picks. */
export class StartupProblems {
  private shown = false;

  constructor(
    private readonly log: vscode.LogOutputChannel,
    private readonly target: ProblemTarget,
  ) {}

  /** A new start attempt: its first problem is shown again. */
  rearm(): void {
    this.shown = false;
  }

  show(message: string, actions: StartupAction[]): void {
    if (this.shown) return;
    this.shown = true;
    const labels = actions.map((a) => ACTION_LABELS[a]);
    void vscode.window.showErrorMessage(message, ...labels).then((label) => {
      const action = actions.find((a) => ACTION_LABELS[a] === label);
      if (action) void this.run(action);
    });
  }

  private async run(action: StartupAction): Promise<void> {
    switch (action) {
      case 'showLogs':
        this.log.show(true);
        return;
      case 'retry':
        await this.target.restart(true);
        return;
      case 'openSettings':
        await vscode.commands.executeCommand('workbench.action.openSettings', `${SECTION}.pythonPath`);
        return;
      case 'selectInterpreter':
        await vscode.commands.executeCommand('python.setInterpreter');
        return;
      case 'installPackage': {
        const python = this.target.pythonCommand() ?? 'python3';
        const terminal = vscode.window.createTerminal({ name: 'MoLE: pip install' });
        terminal.show();
        terminal.sendText(pipInstallCommandLine(python, process.platform));
        const pick = await vscode.window.showInformationMessage(
          'MoLE: restart the server once pip has finished installing mole-lsp.',
          'Restart Server',
        );
        if (pick) await this.target.restart(true);
        return;
      }
    }
  }
}

/** Tells the user why a command failed: bad input, no server, a server that died under it, or the error. */
export function reportCommandError(err: unknown, server: MoleServer, log: vscode.LogOutputChannel): void {
  if (isCancellation(err)) return;
  if (err instanceof ArgumentError) {
    void vscode.window.showWarningMessage(`MoLE: ${err.message}`);
    return;
  }
  if (err instanceof NotRunning) {
    const detail = server.phaseDetail ? ` ${server.phaseDetail}` : '';
    void vscode.window.showErrorMessage(`MoLE: the server is not running.${detail}`, 'Restart Server', 'Show Logs').then((pick) => {
      if (pick === 'Restart Server') void server.restart(true);
      else if (pick === 'Show Logs') log.show(true);
    });
    return;
  }
  if (err instanceof ResponseError && (err.code === ErrorCodes.PendingResponseRejected || err.code === ErrorCodes.ConnectionInactive)) {
    // The server died under the request. A final crash is reported by the close handler.
    if (server.phase === 'failed') return;
    const reason = server.stderrReason();
    const message = `MoLE: the server stopped while answering${reason ? ` (${reason})` : ''}; it is restarting, try again in a moment.`;
    log.error(message);
    void vscode.window.showErrorMessage(message, 'Show Logs').then((pick) => {
      if (pick) log.show(true);
    });
    return;
  }
  const message = err instanceof Error ? err.message : String(err);
  log.error(message);
  void vscode.window.showErrorMessage(`MoLE: ${message}`, 'Show Logs').then((pick) => {
    if (pick) log.show(true);
  });
}
