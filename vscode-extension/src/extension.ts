/**
 * The VS Code entry point: creates the log, the server lifecycle (client/) and the editor features
 * (features/), registers each feature's commands and hooks, and starts the server. Decisions live in
 * the pure modules next to this one (settings, python, statusView, commands) so they can be
 * unit-tested without VS Code.
 */
import * as vscode from 'vscode';

import type { Feature } from './client/feature';
import { reportCommandError } from './client/problems';
import { MoleServer } from './client/server';
import { SettingsSync } from './features/configuration';
import { Explain } from './features/explain';
import { InlineCompletion } from './features/inlineCompletion';
import { StatusMenu } from './features/menu';
import { PackList } from './features/packList';
import { PackCommands } from './features/packs';
import { ServerControl } from './features/serverControl';
import { StatusBar } from './features/status';
import { Translate } from './features/translate';
import { classifyConfigChange } from './settings';

class MoleExtension {
  private readonly log = vscode.window.createOutputChannel('MoLE', { log: true });
  private readonly server = new MoleServer(this.log);
  private readonly disposables: vscode.Disposable[] = [this.log];
  private readonly status: StatusBar;

  constructor() {
    const server = this.server;
    const log = this.log;
    const packs = new PackList(server, log);
    const inline = new InlineCompletion();
    const packCommands = new PackCommands(server, packs, log);
    this.status = new StatusBar(server, packs, inline, log);
    this.disposables.push(packs, this.status);
    // Hooks run in this order: settings warnings come before the status bar's first status request.
    const features: Feature[] = [
      packs,
      inline,
      new SettingsSync(server, log),
      this.status,
      new Explain(server, log),
      new Translate(server, packs, () => this.status.current),
      packCommands,
      new StatusMenu(server, packs, packCommands, inline, log),
      new ServerControl(server, log),
    ];
    for (const f of features) this.register(f);
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        const change = classifyConfigChange((s) => e.affectsConfiguration(s));
        if (server.restartIfNeeded(change)) return;
        for (const f of features) f.configurationChanged?.(change);
      }),
      // Restricted mode ends: the workspace's interpreter, arguments and model settings now count.
      vscode.workspace.onDidGrantWorkspaceTrust(() => {
        this.log.info('The workspace is now trusted: restarting the server with its settings.');
        void server.restart(false);
      }),
    );
  }

  /** Registers the feature's commands (a failure is reported to the user) and its server hooks. */
  private register(feature: Feature): void {
    for (const [id, run] of Object.entries(feature.commands ?? {})) {
      this.disposables.push(
        vscode.commands.registerCommand(id, async () => {
          try {
            await run();
          } catch (err) {
            reportCommandError(err, this.server, this.log);
          }
        }),
      );
    }
    this.server.register(feature);
  }

  activate(): void {
    this.status.show();
    void this.server.start();
  }

  async dispose(): Promise<void> {
    await this.server.dispose();
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

let extension: MoleExtension | undefined;

export function activate(context: vscode.ExtensionContext): void {
  extension = new MoleExtension();
  context.subscriptions.push({ dispose: () => void deactivate() });
  extension.activate();
}

export async function deactivate(): Promise<void> {
  const ext = extension;
  extension = undefined;
  if (ext) await ext.dispose();
}
