/**
 * Keeps the server's settings in step: a server that pulls them (workspace/configuration) gets the
 * same mapped object it is pushed, a changed server setting goes out as didChangeConfiguration, and
 * rejected values are reported.
 */
import * as vscode from 'vscode';
import { DidChangeConfigurationNotification, type Middleware, ResponseError } from 'vscode-languageclient/node';

import { serverSettings } from '../client/config';
import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { SECTION, didChangeConfigurationParams, type ConfigChange } from '../settings';

/** publisher.name in package.json (the settings editor filters on it). */
const EXTENSION_ID = 'mole-lsp.mole-lsp';

export class SettingsSync implements Feature {
  readonly middleware: Middleware = {
    workspace: {
      configuration: async (params, token, next) => {
        const answer = await next(params, token);
        if (answer instanceof ResponseError || !Array.isArray(answer)) return answer;
        return params.items.map((item, i) => (item.section === SECTION ? serverSettings().settings : answer[i]));
      },
    },
  };

  constructor(
    private readonly server: MoleServer,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** The server started with the settings read then: say which of them were rejected. */
  started(config: vscode.WorkspaceConfiguration): void {
    const problems = serverSettings(config).problems;
    if (problems.length) this.warn(problems);
  }

  configurationChanged(change: ConfigChange): void {
    const client = change.server ? this.server.connected : undefined;
    if (!client) return;
    const reading = serverSettings();
    if (reading.problems.length) this.warn(reading.problems);
    void client
      .sendNotification(DidChangeConfigurationNotification.type, didChangeConfigurationParams(reading.settings))
      .catch((err: unknown) => this.log.warn(`didChangeConfiguration: ${String(err)}`));
  }

  private warn(problems: string[]): void {
    for (const p of problems) this.log.warn(p);
    void vscode.window
      .showWarningMessage(`MoLE: ${problems[0]}${problems.length > 1 ? ` (+${problems.length - 1} more)` : ''} The previous value stays in force.`, 'Open Settings')
      .then((pick) => {
        if (pick) void vscode.commands.executeCommand('workbench.action.openSettings', `@ext:${EXTENSION_ID}`);
      });
  }
}
