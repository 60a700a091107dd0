/**
 * Restart Server and Show Logs: the two commands about the server process itself.
 */
import type * as vscode from 'vscode';

import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS } from '../commands';

export class ServerControl implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.restartServer]: () => this.server.restart(true),
    [EXTENSION_COMMANDS.showLogs]: () => this.log.show(true),
  };

  constructor(
    private readonly server: MoleServer,
    private readonly log: vscode.LogOutputChannel,
  ) {}
}
