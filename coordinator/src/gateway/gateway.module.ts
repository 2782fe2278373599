import { Module } from '@nestjs/common';
import { RunsModule } from '../runs/runs.module';
import { AgentGateway } from './agent.gateway';
import { SocketTransportModule } from './socket-transport.module';

/**
 * The agents' socket.io namespace. Re-exports the transport binding (AGENT_TRANSPORT) that
 * RunsModule's round engine uses.
 */
@Module({
  imports: [RunsModule, SocketTransportModule],
  providers: [AgentGateway],
  exports: [SocketTransportModule],
})
export class GatewayModule {}
