/**
 * The language client's lifecycle: starts `<python> -m mole_lsp serve` (start, restart and stop run
 * one after another), follows the client's phase, restarts a crashed server a few times, and sends
 * the features' requests. Features plug in through register() before the first start.
 */
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  RevealOutputChannelOn,
  State,
} from 'vscode-languageclient/node';

import { executeCommandParams } from '../commands';
import { mergeMiddleware, type Feature } from './feature';
import type { CommandSignatures, ServerCommand } from '../protocol';
import { StderrTail, serverCommand, type ResolvedPython } from '../python';
import { SECTION, type ConfigChange } from '../settings';
import { CrashTracker, type ClientPhase } from '../statusView';
import { clientSettings, moleConfiguration, serverSettings } from './config';
import { NotRunning } from './errors';
import { checkInterpreter, findInterpreter, followsPythonExtension, serverOptions, stdioOptions, watchInterpreter } from './launch';
import { StartupProblems } from './problems';

/** Documents the server sees: files on disk and untitled editors. */
export const DOCUMENT_SELECTOR = [{ scheme: 'file' }, { scheme: 'untitled' }];

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

export class MoleServer {
  private client: MoleLanguageClient | undefined;
  private readonly features: Feature[] = [];
  private readonly stderr = new StderrTail();
  private currentPhase: ClientPhase = 'stopped';
  private detail: string | undefined;
  private readonly crashes = new CrashTracker(3, 3 * 60 * 1000);
  private python: ResolvedPython | undefined;
  /** Serialises start/stop/restart. */
  private lifecycle: Promise<void> = Promise.resolve();
  /** True while we stop the client on purpose (no crash handling then). */
  private stopping = false;
  private readonly problems: StartupProblems;
  private interpreterWatch: vscode.Disposable | undefined;
  private readonly phaseChanged = new vscode.EventEmitter<void>();
  /** Fires on every phase change (the status bar redraws). */
  readonly onDidChangePhase = this.phaseChanged.event;

  constructor(private readonly log: vscode.LogOutputChannel) {
    this.problems = new StartupProblems(log, {
      restart: (byUser) => this.restart(byUser),
      pythonCommand: () => this.python?.command,
    });
  }

  /** Adds a feature's middleware, notification handlers and hooks to the clients started from now on. */
  register(feature: Feature): void {
    this.features.push(feature);
  }

  get phase(): ClientPhase {
    return this.currentPhase;
  }

  /** Why the client failed or stopped, for messages and the status bar tooltip. */
  get phaseDetail(): string | undefined {
    return this.detail;
  }

  /** The most telling line the server printed on stderr lately. */
  stderrReason(): string | undefined {
    return this.stderr.reason();
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

  /** Restarts the server when its command line changed (pythonPath, serverArgs); true when it did. */
  restartIfNeeded(change: ConfigChange): boolean {
    if (!change.restart) return false;
    this.log.info('mole.pythonPath or mole.serverArgs changed: restarting the server.');
    void this.restart(false);
    return true;
  }

  /** Stops the server (after any start or restart under way). */
  async dispose(): Promise<void> {
    await this.enqueue(() => this.doStop());
    this.interpreterWatch?.dispose();
    this.phaseChanged.dispose();
  }

  // -- lifecycle ----------------------------------------------------------------------------------

  private enqueue(step: () => Promise<void>): Promise<void> {
    const guarded = (): Promise<void> =>
      step().catch((err: unknown) => {
        const why = err instanceof Error ? err.message : String(err);
        this.log.error(`Unexpected error while starting or stopping the server: ${why}`);
        this.setPhase('failed', why);
        this.problems.show(`MoLE: could not start the server: ${why}`, ['showLogs', 'retry']);
      });
    this.lifecycle = this.lifecycle.then(guarded, guarded);
    return this.lifecycle;
  }

  private setPhase(phase: ClientPhase, detail?: string): void {
    this.currentPhase = phase;
    this.detail = detail;
    this.phaseChanged.fire();
  }

  /** The features forget what the previous server said. */
  private resetFeatures(): void {
    for (const f of this.features) f.reset?.();
  }

  private async doStart(): Promise<void> {
    this.problems.rearm();
    this.resetFeatures();
    this.setPhase('starting');

    const config = moleConfiguration();
    const client = clientSettings(config);
    for (const p of client.problems) this.log.warn(p);
    const found = await findInterpreter(client.settings.pythonPath, this.log);
    this.python = found.python;
    if (followsPythonExtension(found.python)) this.watchInterpreter();

    const problem = await checkInterpreter(found, this.log);
    if (problem) {
      this.setPhase('failed', problem.message);
      this.problems.show(problem.message, problem.actions);
      return;
    }

    const cmd = serverCommand(found.python.command, client.settings.serverArgs);
    this.log.info(`Starting: ${[cmd.command, ...cmd.args].join(' ')}`);
    this.stderr.clear();
    const languageClient = new MoleLanguageClient(SECTION, 'MoLE', serverOptions(cmd), this.clientOptions());
    this.client = languageClient;
    for (const f of this.features) {
      for (const [method, handler] of Object.entries(f.notifications ?? {})) languageClient.onNotification(method, handler);
    }
    languageClient.onDidChangeState((e) => {
      if (this.client !== languageClient) return;
      if (e.newState === State.Running) this.setPhase('running');
      else if (e.newState === State.Starting) this.setPhase('starting');
      else if (e.newState === State.Stopped && !this.stopping && this.currentPhase !== 'failed') this.setPhase('starting');
    });

    try {
      await languageClient.start();
    } catch (err) {
      if (this.client !== languageClient) return;
      const why = this.stderr.reason() ?? (err instanceof Error ? err.message : String(err));
      this.log.error(`The server failed to start: ${why}`);
      this.setPhase('failed', `The server failed to start: ${why}`);
      this.problems.show(
        `MoLE: the server stopped while starting: ${why}. Check that "${cmd.command} -m mole_lsp serve" works in a terminal; the log has the details.`,
        ['showLogs', 'retry'],
      );
      return;
    }
    languageClient.quiet = false;
    this.setPhase('running');
    for (const f of this.features) await f.started?.(config);
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
      this.resetFeatures();
      this.setPhase('stopped');
    }
  }

  private watchInterpreter(): void {
    if (this.interpreterWatch) return;
    void watchInterpreter(this.log, () => void this.restart(false)).then((d) => {
      if (d) this.interpreterWatch = d;
    });
  }

  private clientOptions(): LanguageClientOptions {
    return {
      documentSelector: DOCUMENT_SELECTOR,
      outputChannel: this.log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: () => serverSettings().settings,
      // Reported by doStart when start() rejects; never retried automatically.
      initializationFailedHandler: (error: unknown) => {
        this.log.error(`Initialization failed: ${error instanceof Error ? error.message : String(error)}`);
        return false;
      },
      stdioOptions: stdioOptions(this.stderr),
      errorHandler: {
        error: (_error, _message, count) =>
          count !== undefined && count <= 3 ? { action: ErrorAction.Continue } : { action: ErrorAction.Shutdown },
        closed: () => {
          // A server that never got running is reported by doStart, not restarted in a loop.
          if (this.stopping || this.currentPhase !== 'running') return { action: CloseAction.DoNotRestart, handled: true };
          if (this.crashes.crashed(Date.now())) {
            this.log.warn(`The server stopped unexpectedly; restarting (${this.crashes.recentCrashes} in the last 3 minutes).`);
            this.resetFeatures();
            this.setPhase('starting');
            return { action: CloseAction.Restart, handled: true };
          }
          const message = `MoLE: the server crashed ${this.crashes.recentCrashes} times in 3 minutes and was not restarted.`;
          this.log.error(message);
          this.setPhase('failed', message);
          this.problems.show(message, ['retry', 'showLogs']);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      middleware: mergeMiddleware(this.features),
    };
  }

  // -- requests -----------------------------------------------------------------------------------

  /** A client exists and has started (background requests are worth sending). */
  get running(): boolean {
    return this.client !== undefined && this.currentPhase === 'running';
  }

  /** The client, when it is running (for notifications that only make sense then). */
  get connected(): LanguageClient | undefined {
    return this.client?.isRunning() ? this.client : undefined;
  }

  /** The current client; throws NotRunning while the server is stopped or failed. */
  runningClient(): LanguageClient {
    const client = this.client;
    if (!client || this.currentPhase === 'failed' || this.currentPhase === 'stopped') {
      throw new NotRunning();
    }
    return client;
  }

  /** A document URI as the language client sends it (what `mole/status` names in `activeUri`). */
  protocolUri(uri: vscode.Uri): string {
    return this.client?.code2ProtocolConverter.asUri(uri) ?? uri.toString();
  }

  /** Runs one of the server's `workspace/executeCommand` commands; an empty answer is an error. */
  async request<C extends ServerCommand>(
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
}
