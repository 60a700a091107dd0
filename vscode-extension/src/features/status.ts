/**
 * The status bar item: the client's phase, the server's `mole/status` and `$/progress`, and the
 * expert or pack of the active editor. Keeps the last status (Translate reads it too).
 */
import * as vscode from 'vscode';
import type { Middleware } from 'vscode-languageclient/node';

import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS, statusParams } from '../commands';
import { CMD_STATUS, NOTIFY_STATUS, type Status } from '../protocol';
import type { ConfigChange } from '../settings';
import { ProgressTracker, coerceStatus, renderStatus } from '../statusView';
import type { InlineCompletion } from './inlineCompletion';
import type { PackList } from './packList';

export class StatusBar implements Feature {
  private readonly item: vscode.StatusBarItem;
  private status: Status | undefined;
  private readonly progress = new ProgressTracker();
  private readonly subscriptions: vscode.Disposable[];

  readonly notifications = {
    [NOTIFY_STATUS]: (raw: unknown) => this.received(raw),
  };

  readonly middleware: Middleware = {
    handleWorkDoneProgress: (token, params, next) => {
      if (params.kind === 'begin') {
        this.progress.apply(token, { kind: 'begin', title: params.title, message: params.message, percentage: params.percentage });
      } else if (params.kind === 'report') {
        this.progress.apply(token, { kind: 'report', message: params.message, percentage: params.percentage });
      } else {
        this.progress.apply(token, { kind: 'end', message: params.message });
      }
      this.render();
      next(token, params);
    },
  };

  constructor(
    private readonly server: MoleServer,
    private readonly packs: PackList,
    private readonly inline: InlineCompletion,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.item = vscode.window.createStatusBarItem('mole.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'MoLE';
    this.item.command = EXTENSION_COMMANDS.showPacks;
    this.subscriptions = [
      server.onDidChangePhase(() => this.render()),
      packs.onDidChange(() => this.render()),
      vscode.window.onDidChangeActiveTextEditor(() => this.render()),
    ];
  }

  /** The last `mole/status` of this server. */
  get current(): Status | undefined {
    return this.status;
  }

  reset(): void {
    this.status = undefined;
    this.progress.clear();
  }

  /** Asks once for the state in case the first notification went out before the handler existed. */
  async started(): Promise<void> {
    try {
      const seed = await this.server.request(CMD_STATUS, statusParams());
      if (!this.status) this.received(seed);
    } catch (err) {
      this.log.warn(`${CMD_STATUS} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  configurationChanged(change: ConfigChange): void {
    if (change.view) this.render();
  }

  show(): void {
    this.render();
    this.item.show();
  }

  private received(raw: unknown): void {
    const status = coerceStatus(raw);
    if (!status) {
      this.log.warn(`Ignoring a malformed ${NOTIFY_STATUS}: ${JSON.stringify(raw)}`);
      return;
    }
    const before = this.status?.state;
    this.status = status;
    // The model just became usable, or a download (an automatic pack install) just ended: the packs
    // may have changed.
    const usable = (state: string | undefined): boolean => state === 'ready' || state === 'generating';
    if (usable(status.state) && (!usable(before) || !this.packs.current)) this.packs.refresh();
    // Keystrokes typed while the server started or loaded got no ghost text: ask again now.
    if (status.state === 'ready' && !usable(before)) this.inline.serverReady();
    this.render();
  }

  private render(): void {
    const editor = vscode.window.activeTextEditor;
    const languageId = editor?.document.languageId;
    const view = renderStatus({
      client: this.server.phase,
      clientDetail: this.server.phaseDetail,
      server: this.status,
      progress: this.progress.current(),
      editorUri: editor ? this.server.protocolUri(editor.document.uri) : undefined,
      editorLanguageId: languageId,
      packs: this.packs.current?.packs,
      inlineEnabled: this.inline.enabled,
      languageEnabled: languageId ? this.inline.languageEnabled(languageId) : true,
    });
    this.item.text = view.text;
    this.item.tooltip = new vscode.MarkdownString(view.tooltip, true);
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.item.dispose();
  }
}
