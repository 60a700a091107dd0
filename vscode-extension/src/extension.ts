/**
 * The VS Code side: starts `<python> -m mole_lsp serve` through vscode-languageclient, wires the
 * commands, the status bar item and the settings. Decisions live in the pure modules next to this
 * one (settings, python, statusView, commands) so they can be unit-tested without VS Code.
 */
import * as readline from 'node:readline';
import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ErrorCodes,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  LSPErrorCodes,
  ResponseError,
  RevealOutputChannelOn,
  type ServerOptions,
  State,
} from 'vscode-languageclient/node';

import {
  ArgumentError,
  EXTENSION_COMMANDS,
  allPackItems,
  baseName,
  effectiveRange,
  executeCommandParams,
  explainArgs,
  explanationDocument,
  installCandidates,
  listPacksParams,
  normalizePackList,
  packArgs,
  packForLanguageId,
  removeCandidates,
  statusParams,
  summarizeInstall,
  summarizeRemove,
  translateArgs,
  translateTargets,
  translationLanguageId,
  type PackItem,
  type Summary,
} from './commands';
import {
  CMD_EXPLAIN,
  CMD_INSTALL_PACK,
  CMD_LIST_PACKS,
  CMD_REMOVE_PACK,
  CMD_STATUS,
  CMD_TRANSLATE,
  NOTIFY_STATUS,
  type CommandSignatures,
  type ListPacksResult,
  type LspRange,
  type ServerCommand,
  type ServerSettings,
  type Status,
} from './protocol';
import {
  ACTION_LABELS,
  classifyProbe,
  describeSource,
  pipInstallCommandLine,
  resolvePython,
  StderrTail,
  stderrLevel,
  runProbe,
  serverCommand,
  startupProblemMessage,
  type ResolvedPython,
  type StartupAction,
} from './python';
import {
  activeInterpreter,
  interpreterFromPythonSettings,
  onInterpreterChanged,
  pythonExtensionInstalled,
} from './pythonExtension';
import {
  SECTION,
  classifyConfigChange,
  didChangeConfigurationParams,
  isLanguageEnabled,
  readClientSettings,
  readServerSettings,
  withLanguageEnabled,
} from './settings';
import {
  CrashTracker,
  ProgressTracker,
  coerceStatus,
  expertForEditor,
  renderStatus,
  type ClientPhase,
} from './statusView';

/** publisher.name in package.json. */
const EXTENSION_ID = 'mole-lsp.mole-lsp';

/** Documents the server sees: files on disk and untitled editors. */
const DOCUMENT_SELECTOR = [{ scheme: 'file' }, { scheme: 'untitled' }];

/**
 * vscode-languageclient pops up its own "couldn't create connection" error when a start fails; the
 * extension explains that failure itself (with the server's last stderr line and a Retry button), so
 * while starting the library's forced notifications only go to the log.
 */
class MoleLanguageClient extends LanguageClient {
  quiet = true;

  override error(message: string, data?: unknown, showNotification?: boolean | 'force'): void {
    super.error(message, data, this.quiet && showNotification === 'force' ? false : showNotification);
  }
}

class MoleExtension implements vscode.Disposable {
  private readonly log: vscode.LogOutputChannel;
  private readonly item: vscode.StatusBarItem;
  private readonly disposables: vscode.Disposable[] = [];
  private client: MoleLanguageClient | undefined;
  private readonly stderr = new StderrTail();
  private phase: ClientPhase = 'stopped';
  private phaseDetail: string | undefined;
  private status: Status | undefined;
  private readonly progress = new ProgressTracker();
  /** The last `mole.listPacks` answer (the status bar maps the active editor to its pack with it). */
  private packs: ListPacksResult | undefined;
  /** Numbers background pack listings; only the newest one is kept. */
  private packsRequest = 0;
  private readonly crashes = new CrashTracker(3, 3 * 60 * 1000);
  private python: ResolvedPython | undefined;
  /** Serialises start/stop/restart. */
  private lifecycle: Promise<void> = Promise.resolve();
  /** True while we stop the client on purpose (no crash handling then). */
  private stopping = false;
  /** One error message per start attempt. */
  private failureShown = false;
  private interpreterWatch: vscode.Disposable | undefined;

  constructor() {
    this.log = vscode.window.createOutputChannel('MoLE', { log: true });
    this.item = vscode.window.createStatusBarItem('mole.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'MoLE';
    this.item.command = EXTENSION_COMMANDS.showPacks;
    this.disposables.push(this.log, this.item);
  }

  activate(): void {
    const c = EXTENSION_COMMANDS;
    const register = (id: string, fn: () => unknown): void => {
      this.disposables.push(
        vscode.commands.registerCommand(id, async () => {
          try {
            await fn();
          } catch (err) {
            this.reportError(err);
          }
        }),
      );
    };
    register(c.explainSelection, () => this.explainSelection());
    register(c.translateSelection, () => this.translateSelection());
    register(c.installPacks, () => this.installPacks());
    register(c.removePacks, () => this.removePacks());
    register(c.showPacks, () => this.showPacks());
    register(c.restartServer, () => this.restart(true));
    register(c.showLogs, () => this.log.show(true));
    register(c.toggleInlineCompletions, () => this.toggleInlineCompletions());

    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => this.configurationChanged(e)),
      vscode.window.onDidChangeActiveTextEditor(() => this.render()),
    );
    this.render();
    this.item.show();
    void this.start();
  }

  // -- lifecycle ----------------------------------------------------------------------------------

  private enqueue(step: () => Promise<void>): Promise<void> {
    const guarded = (): Promise<void> =>
      step().catch((err: unknown) => {
        const why = err instanceof Error ? err.message : String(err);
        this.log.error(`Unexpected error while starting or stopping the server: ${why}`);
        this.setPhase('failed', why);
        this.showProblem(`MoLE: could not start the server: ${why}`, ['showLogs', 'retry']);
      });
    this.lifecycle = this.lifecycle.then(guarded, guarded);
    return this.lifecycle;
  }

  start(): Promise<void> {
    return this.enqueue(() => this.doStart());
  }

  restart(byUser: boolean): Promise<void> {
    return this.enqueue(async () => {
      if (byUser) this.crashes.reset();
      await this.doStop();
      await this.doStart();
    });
  }

  private workspaceResource(): vscode.Uri | undefined {
    return vscode.window.activeTextEditor?.document.uri ?? vscode.workspace.workspaceFolders?.[0]?.uri;
  }

  private setPhase(phase: ClientPhase, detail?: string): void {
    this.phase = phase;
    this.phaseDetail = detail;
    this.render();
  }

  private async doStart(): Promise<void> {
    this.failureShown = false;
    this.status = undefined;
    this.packs = undefined;
    this.progress.clear();
    this.setPhase('starting');

    const config = vscode.workspace.getConfiguration(SECTION);
    const client = readClientSettings((n) => config.get(n));
    for (const p of client.problems) this.log.warn(p);
    const resource = this.workspaceResource();
    const haveX = pythonExtensionInstalled();
    const python = await resolvePython({
      configured: client.settings.pythonPath,
      fromPythonExtension: haveX ? () => activeInterpreter(resource) : undefined,
      fromPythonSettings: haveX ? () => interpreterFromPythonSettings(resource) : undefined,
      platform: process.platform,
      variables: {
        workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
        env: process.env,
      },
    });
    this.python = python;
    for (const note of python.notes) this.log.info(note);
    this.log.info(`Python: ${python.command} (from ${describeSource(python.source)})`);
    if (python.source === 'pythonExtension' || python.source === 'pythonSettings') this.watchInterpreter();

    const verdict = classifyProbe(await runProbe(python.command));
    if (!verdict.ok) {
      this.log.error(`Cannot start the server: ${verdict.detail}`);
      const problem = startupProblemMessage(verdict.kind, python, verdict.detail, haveX);
      this.setPhase('failed', problem.message);
      this.showProblem(problem.message, problem.actions);
      return;
    }
    this.log.info(
      `mole-lsp ${verdict.moleVersion ?? '(version unknown)'} at ${verdict.origin ?? '?'}; Python ${verdict.pythonVersion} (${verdict.executable})`,
    );

    const cmd = serverCommand(python.command, client.settings.serverArgs);
    this.log.info(`Starting: ${[cmd.command, ...cmd.args].join(' ')}`);
    const serverOptions: ServerOptions = {
      command: cmd.command,
      args: cmd.args,
      options: {
        cwd: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
        env: { ...process.env, PYTHONUNBUFFERED: '1', PYTHONIOENCODING: 'utf-8' },
      },
    };
    this.stderr.clear();
    const languageClient = new MoleLanguageClient(SECTION, 'MoLE', serverOptions, this.clientOptions());
    this.client = languageClient;
    languageClient.onNotification(NOTIFY_STATUS, (raw: unknown) => this.statusReceived(raw));
    languageClient.onDidChangeState((e) => {
      if (this.client !== languageClient) return;
      if (e.newState === State.Running) this.setPhase('running');
      else if (e.newState === State.Starting) this.setPhase('starting');
      else if (e.newState === State.Stopped && !this.stopping && this.phase !== 'failed') this.setPhase('starting');
    });

    try {
      await languageClient.start();
    } catch (err) {
      if (this.client !== languageClient) return;
      const why = this.stderr.reason() ?? (err instanceof Error ? err.message : String(err));
      this.log.error(`The server failed to start: ${why}`);
      this.setPhase('failed', `The server failed to start: ${why}`);
      this.showProblem(
        `MoLE: the server stopped while starting: ${why}. Check that "${cmd.command} -m mole_lsp serve" works in a terminal; the log has the details.`,
        ['showLogs', 'retry'],
      );
      return;
    }
    languageClient.quiet = false;
    this.setPhase('running');
    const problems = readServerSettings((n) => config.get(n)).problems;
    if (problems.length) this.warnSettings(problems);
    // Ask once for the state in case the first notification went out before the handler existed.
    try {
      const seed = await this.request(CMD_STATUS, statusParams());
      if (!this.status) this.statusReceived(seed);
    } catch (err) {
      this.log.warn(`${CMD_STATUS} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async doStop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    this.stopping = true;
    try {
      if (client.needsStop()) await client.dispose(5000);
    } catch (err) {
      this.log.warn(`Stopping the server: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      this.stopping = false;
      this.status = undefined;
      this.packs = undefined;
      this.progress.clear();
      this.setPhase('stopped');
    }
  }

  private watchInterpreter(): void {
    if (this.interpreterWatch) return;
    void onInterpreterChanged(() => {
      if (readClientSettings((n) => vscode.workspace.getConfiguration(SECTION).get(n)).settings.pythonPath) return;
      this.log.info('The Python extension selected another interpreter: restarting the server.');
      void this.restart(false);
    }).then((d) => {
      if (d) {
        this.interpreterWatch = d;
        this.disposables.push(d);
      }
    });
  }

  private clientOptions(): LanguageClientOptions {
    return {
      documentSelector: DOCUMENT_SELECTOR,
      outputChannel: this.log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: () => this.serverSettings(),
      // Reported by doStart when start() rejects; never retried automatically.
      initializationFailedHandler: (error: unknown) => {
        this.log.error(`Initialization failed: ${error instanceof Error ? error.message : String(error)}`);
        return false;
      },
      stdioOptions: {
        stdout: (input, channel) => lines(input, (line) => channel.info(line)),
        stderr: (input, channel) =>
          lines(input, (line) => {
            this.stderr.push(line);
            channel[stderrLevel(line)](line);
          }),
      },
      errorHandler: {
        error: (_error, _message, count) =>
          count !== undefined && count <= 3 ? { action: ErrorAction.Continue } : { action: ErrorAction.Shutdown },
        closed: () => {
          // A server that never got running is reported by doStart, not restarted in a loop.
          if (this.stopping || this.phase !== 'running') return { action: CloseAction.DoNotRestart, handled: true };
          if (this.crashes.crashed(Date.now())) {
            this.log.warn(`The server stopped unexpectedly; restarting (${this.crashes.recentCrashes} in the last 3 minutes).`);
            this.status = undefined;
            this.packs = undefined;
            this.progress.clear();
            this.setPhase('starting');
            return { action: CloseAction.Restart, handled: true };
          }
          const message = `MoLE: the server crashed ${this.crashes.recentCrashes} times in 3 minutes and was not restarted.`;
          this.log.error(message);
          this.setPhase('failed', message);
          this.showProblem(message, ['retry', 'showLogs']);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      middleware: {
        provideInlineCompletionItems: (document, position, context, token, next) => {
          if (!this.inlineAllowed(document.languageId)) return null;
          return next(document, position, context, token);
        },
        // Ghost text covers what the server's textDocument/completion offers: asking for both would
        // run every generation twice.
        provideCompletionItem: () => null,
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
        workspace: {
          // A server that pulls its settings gets the same mapped object it is pushed.
          configuration: async (params, token, next) => {
            const answer = await next(params, token);
            if (answer instanceof ResponseError || !Array.isArray(answer)) return answer;
            return params.items.map((item, i) => (item.section === SECTION ? this.serverSettings() : answer[i]));
          },
        },
      },
    };
  }

  private serverSettings(): ServerSettings {
    const config = vscode.workspace.getConfiguration(SECTION);
    return readServerSettings((n) => config.get(n)).settings;
  }

  private inlineAllowed(languageId: string): boolean {
    const config = vscode.workspace.getConfiguration(SECTION);
    if (!readClientSettings((n) => config.get(n)).settings.inlineCompletionsEnabled) return false;
    return isLanguageEnabled(this.serverSettings().enable, languageId);
  }

  private configurationChanged(e: vscode.ConfigurationChangeEvent): void {
    const change = classifyConfigChange((s) => e.affectsConfiguration(s));
    if (change.restart) {
      this.log.info('mole.pythonPath or mole.serverArgs changed: restarting the server.');
      void this.restart(false);
      return;
    }
    if (change.server && this.client?.isRunning()) {
      const config = vscode.workspace.getConfiguration(SECTION);
      const reading = readServerSettings((n) => config.get(n));
      if (reading.problems.length) this.warnSettings(reading.problems);
      void this.client
        .sendNotification(DidChangeConfigurationNotification.type, didChangeConfigurationParams(reading.settings))
        .catch((err: unknown) => this.log.warn(`didChangeConfiguration: ${String(err)}`));
    }
    if (change.view) this.render();
  }

  private warnSettings(problems: string[]): void {
    for (const p of problems) this.log.warn(p);
    void vscode.window
      .showWarningMessage(`MoLE: ${problems[0]}${problems.length > 1 ? ` (+${problems.length - 1} more)` : ''} The previous value stays in force.`, 'Open Settings')
      .then((pick) => {
        if (pick) void vscode.commands.executeCommand('workbench.action.openSettings', `@ext:${EXTENSION_ID}`);
      });
  }

  // -- status bar ---------------------------------------------------------------------------------

  private statusReceived(raw: unknown): void {
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
    if (usable(status.state) && (!usable(before) || !this.packs)) this.refreshPacks();
    this.render();
  }

  /** Lists the packs in the background for the status bar (no notification, failures only logged). */
  private refreshPacks(): void {
    if (!this.client || this.phase !== 'running') return;
    const n = ++this.packsRequest;
    this.request(CMD_LIST_PACKS, listPacksParams())
      .then((list) => {
        if (n === this.packsRequest) this.packsListed(list);
      })
      .catch((err: unknown) => {
        if (!isCancellation(err) && !(err instanceof NotRunning)) this.log.warn(`${CMD_LIST_PACKS} failed: ${err instanceof Error ? err.message : String(err)}`);
      });
  }

  /** Keeps a `mole.listPacks` answer (from any command) for the status bar; returns it normalised. */
  private packsListed(raw: ListPacksResult): ListPacksResult {
    const list = normalizePackList(raw);
    this.packs = list;
    this.render();
    return list;
  }

  /** The active editor's document URI as the language client sends it (what `activeUri` holds). */
  private protocolUri(uri: vscode.Uri): string {
    return this.client?.code2ProtocolConverter.asUri(uri) ?? uri.toString();
  }

  private render(): void {
    const editor = vscode.window.activeTextEditor;
    const languageId = editor?.document.languageId;
    const config = vscode.workspace.getConfiguration(SECTION);
    const inlineEnabled = readClientSettings((n) => config.get(n)).settings.inlineCompletionsEnabled;
    const view = renderStatus({
      client: this.phase,
      clientDetail: this.phaseDetail,
      server: this.status,
      progress: this.progress.current(),
      editorUri: editor ? this.protocolUri(editor.document.uri) : undefined,
      editorLanguageId: languageId,
      packs: this.packs?.packs,
      inlineEnabled,
      languageEnabled: languageId ? isLanguageEnabled(this.serverSettings().enable, languageId) : true,
    });
    this.item.text = view.text;
    const tooltip = new vscode.MarkdownString(view.tooltip, true);
    this.item.tooltip = tooltip;
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  // -- requests -----------------------------------------------------------------------------------

  private runningClient(): LanguageClient {
    const client = this.client;
    if (!client || this.phase === 'failed' || this.phase === 'stopped') {
      throw new NotRunning();
    }
    return client;
  }

  private async request<C extends ServerCommand>(
    command: C,
    arg: CommandSignatures[C]['params'],
    token?: vscode.CancellationToken,
  ): Promise<CommandSignatures[C]['result']> {
    const client = this.runningClient();
    const params = executeCommandParams(command, arg);
    const result: unknown = await client.sendRequest(ExecuteCommandRequest.type, params, token);
    if (result === null || result === undefined) throw new Error(`${command} returned nothing.`);
    return result as CommandSignatures[C]['result'];
  }

  /** Runs `work` under a cancellable notification; resolves undefined when the user cancelled. */
  private async withProgress<T>(title: string, work: (token: vscode.CancellationToken) => Promise<T>): Promise<T | undefined> {
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title, cancellable: true },
      async (_progress, token) => {
        try {
          return await work(token);
        } catch (err) {
          if (token.isCancellationRequested || isCancellation(err)) return undefined;
          throw err;
        }
      },
    );
  }

  private async listPacks(): Promise<ListPacksResult | undefined> {
    const list = await this.withProgress('MoLE: listing packs…', (token) => this.request(CMD_LIST_PACKS, listPacksParams(), token));
    return list && this.packsListed(list);
  }

  private selectionRange(editor: vscode.TextEditor): LspRange | undefined {
    const sel = editor.selection;
    return effectiveRange(
      { start: { line: sel.start.line, character: sel.start.character }, end: { line: sel.end.line, character: sel.end.character } },
      (line) => editor.document.lineAt(line).text.length,
    );
  }

  private sourceEditor(action: string): { editor: vscode.TextEditor; range: LspRange; uri: string } | undefined {
    const client = this.runningClient();
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showWarningMessage(`MoLE: open a file and select the code to ${action}.`);
      return undefined;
    }
    if (!vscode.languages.match(DOCUMENT_SELECTOR, editor.document)) {
      void vscode.window.showWarningMessage(`MoLE works on files and untitled editors, not on ${editor.document.uri.scheme}: documents.`);
      return undefined;
    }
    const range = this.selectionRange(editor);
    if (!range) {
      void vscode.window.showWarningMessage(`MoLE: select the code to ${action} (the cursor line is empty).`);
      return undefined;
    }
    return { editor, range, uri: client.code2ProtocolConverter.asUri(editor.document.uri) };
  }

  // -- commands -----------------------------------------------------------------------------------

  private async explainSelection(): Promise<void> {
    const src = this.sourceEditor('explain');
    if (!src) return;
    const args = explainArgs(src.uri, src.range);
    const result = await this.withProgress('MoLE: explaining…', (token) => this.request(CMD_EXPLAIN, args, token));
    if (!result) return;
    const content = explanationDocument(result, baseName(src.editor.document.uri.path || src.uri), src.range);
    const doc = await vscode.workspace.openTextDocument({ language: 'markdown', content });
    try {
      await vscode.commands.executeCommand('markdown.showPreviewToSide', doc.uri);
    } catch (err) {
      // The built-in markdown extension may be disabled: show the source instead.
      this.log.warn(`markdown.showPreviewToSide failed (${String(err)}); opening the markdown text.`);
      await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true });
    }
  }

  private async translateSelection(): Promise<void> {
    const src = this.sourceEditor('translate');
    if (!src) return;
    const list = await this.listPacks();
    if (!list) return;
    // The selection's language: the registry's languageId map, else what the server last said about
    // this very document.
    const sourceId = src.editor.document.languageId;
    const sourceLanguage = packForLanguageId(list.packs, sourceId)?.language ?? expertForEditor(this.status, src.uri, sourceId)?.language;
    const targets = translateTargets(list, sourceLanguage);
    if (targets.length === 0) {
      const others = translateTargets(list).length > 0;
      void vscode.window.showWarningMessage(
        others
          ? `MoLE: no language other than ${sourceLanguage ?? sourceId} to translate to${list.offline ? ' (offline: installed packs only)' : ''}.`
          : list.offline
            ? 'MoLE: offline and no expert pack installed: nothing to translate to.'
            : 'MoLE: the pack repository lists no languages.',
      );
      return;
    }
    const pick = await vscode.window.showQuickPick(targets, {
      title: 'MoLE: Translate Selection To…',
      placeHolder: 'Target language',
      matchOnDescription: true,
    });
    if (!pick) return;
    const args = translateArgs(src.uri, src.range, pick.language);
    const result = await this.withProgress(`MoLE: translating to ${pick.label}…`, (token) => this.request(CMD_TRANSLATE, args, token));
    if (!result) return;
    const languageId = translationLanguageId(result, await vscode.languages.getLanguages());
    const doc = await vscode.workspace.openTextDocument({ language: languageId, content: result.code });
    await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside });
  }

  private async installPacks(preselected?: PackItem[]): Promise<void> {
    let chosen = preselected;
    if (!chosen) {
      const list = await this.listPacks();
      if (!list) return;
      if (list.offline) {
        void vscode.window.showWarningMessage('MoLE is offline (mole.offline or HF_HUB_OFFLINE): packs cannot be downloaded.');
        return;
      }
      const candidates = installCandidates(list);
      if (candidates.length === 0) {
        void vscode.window.showInformationMessage('MoLE: every available pack is installed.');
        return;
      }
      chosen = await vscode.window.showQuickPick(candidates, {
        title: `MoLE: Install Pack… (${list.repo}@${list.revision})`,
        placeHolder: 'Languages to install',
        canPickMany: true,
        matchOnDescription: true,
      });
    }
    if (!chosen || chosen.length === 0) return;
    const args = packArgs(chosen.map((c) => c.language));
    const result = await this.withProgress(`MoLE: installing ${args.languages.join(', ')}…`, (token) =>
      this.request(CMD_INSTALL_PACK, args, token),
    );
    this.refreshPacks();
    if (result) this.showSummary(summarizeInstall(result));
  }

  private async removePacks(preselected?: PackItem[]): Promise<void> {
    let chosen = preselected;
    if (!chosen) {
      const list = await this.listPacks();
      if (!list) return;
      const candidates = removeCandidates(list);
      if (candidates.length === 0) {
        void vscode.window.showInformationMessage('MoLE: no expert pack is installed.');
        return;
      }
      chosen = await vscode.window.showQuickPick(candidates, {
        title: 'MoLE: Remove Pack…',
        placeHolder: 'Languages to remove from the cache',
        canPickMany: true,
        matchOnDescription: true,
      });
    }
    if (!chosen || chosen.length === 0) return;
    const args = packArgs(chosen.map((c) => c.language));
    const result = await this.withProgress(`MoLE: removing ${args.languages.join(', ')}…`, (token) =>
      this.request(CMD_REMOVE_PACK, args, token),
    );
    this.refreshPacks();
    if (result) this.showSummary(summarizeRemove(result));
  }

  /** The status bar menu: actions first, then every pack (loaded while the menu is open). */
  private async showPacks(): Promise<void> {
    type Entry = vscode.QuickPickItem & { run?: () => unknown; pack?: PackItem };
    const languageId = vscode.window.activeTextEditor?.document.languageId;
    const config = vscode.workspace.getConfiguration(SECTION);
    const inlineOn = readClientSettings((n) => config.get(n)).settings.inlineCompletionsEnabled;
    const actions: Entry[] = [
      { label: 'Actions', kind: vscode.QuickPickItemKind.Separator },
      { label: '$(cloud-download) Install Pack…', run: () => this.installPacks() },
      { label: '$(trash) Remove Pack…', run: () => this.removePacks() },
      {
        label: inlineOn ? '$(eye-closed) Turn Inline Completions Off' : '$(eye) Turn Inline Completions On',
        run: () => this.toggleInlineCompletions(),
      },
    ];
    if (languageId) {
      const on = isLanguageEnabled(this.serverSettings().enable, languageId);
      actions.push({
        label: on ? `$(circle-slash) Disable for ${languageId}` : `$(check) Enable for ${languageId}`,
        description: 'mole.enable',
        run: () => this.setLanguageEnabled(languageId, !on),
      });
    }
    actions.push(
      { label: '$(output) Show Logs', run: () => this.log.show(true) },
      { label: '$(debug-restart) Restart Server', run: () => this.restart(true) },
    );

    const qp = vscode.window.createQuickPick<Entry>();
    qp.title = 'MoLE';
    qp.placeholder = 'Packs and actions';
    qp.matchOnDescription = true;
    qp.items = actions;
    const cts = new vscode.CancellationTokenSource();
    if (this.client && this.phase === 'running') {
      qp.busy = true;
      this.request(CMD_LIST_PACKS, listPacksParams(), cts.token)
        .then((raw) => {
          const list = this.packsListed(raw);
          const header = `Packs · ${list.repo || 'default repository'}@${list.revision}${list.offline ? ' · offline' : ''}`;
          const packs: Entry[] = allPackItems(list).map((p) => ({ label: p.label, description: p.description, detail: p.detail, pack: p }));
          qp.items = [...actions, { label: header, kind: vscode.QuickPickItemKind.Separator }, ...packs];
        })
        .catch((err: unknown) => {
          if (!isCancellation(err)) {
            this.log.warn(`${CMD_LIST_PACKS} failed: ${String(err)}`);
            qp.items = [...actions, { label: 'Packs could not be listed (see logs)', kind: vscode.QuickPickItemKind.Separator }];
          }
        })
        .finally(() => {
          qp.busy = false;
        });
    }
    const picked = await new Promise<Entry | undefined>((resolve) => {
      qp.onDidAccept(() => {
        resolve(qp.selectedItems[0]);
        qp.hide();
      });
      qp.onDidHide(() => resolve(undefined));
      qp.show();
    });
    cts.cancel();
    cts.dispose();
    qp.dispose();
    if (!picked) return;
    if (picked.run) {
      await picked.run();
      return;
    }
    const pack = picked.pack;
    if (!pack) return;
    if (pack.installed) {
      const yes = await vscode.window.showWarningMessage(`Remove the ${pack.label.replace(/^\$\([^)]*\)\s*/, '')} pack from the cache?`, { modal: true }, 'Remove');
      if (yes) await this.removePacks([pack]);
    } else {
      await this.installPacks([pack]);
    }
  }

  private async toggleInlineCompletions(): Promise<void> {
    const config = vscode.workspace.getConfiguration(SECTION);
    const key = 'inlineCompletions.enable';
    const current = readClientSettings((n) => config.get(n)).settings.inlineCompletionsEnabled;
    const info = config.inspect<boolean>(key);
    const target =
      info?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : info?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    await config.update(key, !current, target);
    vscode.window.setStatusBarMessage(`MoLE: inline completions ${current ? 'off' : 'on'}`, 3000);
  }

  private async setLanguageEnabled(languageId: string, enabled: boolean): Promise<void> {
    const config = vscode.workspace.getConfiguration(SECTION);
    const info = config.inspect<Record<string, boolean>>('enable');
    const target = info?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    const base = (target === vscode.ConfigurationTarget.Workspace ? info?.workspaceValue : info?.globalValue) ?? this.serverSettings().enable;
    await config.update('enable', withLanguageEnabled(base, languageId, enabled), target);
  }

  // -- messages -----------------------------------------------------------------------------------

  private showSummary(summary: Summary): void {
    const show =
      summary.severity === 'error'
        ? vscode.window.showErrorMessage
        : summary.severity === 'warning'
          ? vscode.window.showWarningMessage
          : vscode.window.showInformationMessage;
    (summary.severity === 'info' ? this.log.info : this.log.warn).call(this.log, summary.message);
    void show(summary.message, 'Show Logs').then((pick) => {
      if (pick) this.log.show(true);
    });
  }

  private showProblem(message: string, actions: StartupAction[]): void {
    if (this.failureShown) return;
    this.failureShown = true;
    const labels = actions.map((a) => ACTION_LABELS[a]);
    void vscode.window.showErrorMessage(message, ...labels).then((label) => {
      const action = actions.find((a) => ACTION_LABELS[a] === label);
      if (action) void this.runAction(action);
    });
  }

  private async runAction(action: StartupAction): Promise<void> {
    switch (action) {
      case 'showLogs':
        this.log.show(true);
        return;
      case 'retry':
        await this.restart(true);
        return;
      case 'openSettings':
        await vscode.commands.executeCommand('workbench.action.openSettings', `${SECTION}.pythonPath`);
        return;
      case 'selectInterpreter':
        await vscode.commands.executeCommand('python.setInterpreter');
        return;
      case 'installPackage': {
        const python = this.python?.command ?? 'python3';
        const terminal = vscode.window.createTerminal({ name: 'MoLE: pip install' });
        terminal.show();
        terminal.sendText(pipInstallCommandLine(python, process.platform));
        const pick = await vscode.window.showInformationMessage(
          'MoLE: restart the server once pip has finished installing mole-lsp.',
          'Restart Server',
        );
        if (pick) await this.restart(true);
        return;
      }
    }
  }

  private reportError(err: unknown): void {
    if (isCancellation(err)) return;
    if (err instanceof ArgumentError) {
      void vscode.window.showWarningMessage(`MoLE: ${err.message}`);
      return;
    }
    if (err instanceof NotRunning) {
      const detail = this.phaseDetail ? ` ${this.phaseDetail}` : '';
      void vscode.window.showErrorMessage(`MoLE: the server is not running.${detail}`, 'Restart Server', 'Show Logs').then((pick) => {
        if (pick === 'Restart Server') void this.restart(true);
        else if (pick === 'Show Logs') this.log.show(true);
      });
      return;
    }
    if (err instanceof ResponseError && (err.code === ErrorCodes.PendingResponseRejected || err.code === ErrorCodes.ConnectionInactive)) {
      // The server died under the request. A final crash is reported by the close handler.
      if (this.phase === 'failed') return;
      const reason = this.stderr.reason();
      const message = `MoLE: the server stopped while answering${reason ? ` (${reason})` : ''}; it is restarting, try again in a moment.`;
      this.log.error(message);
      void vscode.window.showErrorMessage(message, 'Show Logs').then((pick) => {
        if (pick) this.log.show(true);
      });
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    this.log.error(message);
    void vscode.window.showErrorMessage(`MoLE: ${message}`, 'Show Logs').then((pick) => {
      if (pick) this.log.show(true);
    });
  }

  async dispose(): Promise<void> {
    await this.enqueue(() => this.doStop());
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

function lines(input: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', onLine);
}

class NotRunning extends Error {
  constructor() {
    super('The MoLE server is not running.');
  }
}

function isCancellation(err: unknown): boolean {
  if (err instanceof ResponseError) return err.code === LSPErrorCodes.RequestCancelled;
  return err instanceof vscode.CancellationError;
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
