import { Module } from '@nestjs/common';
import { AGENT_TRANSPORT } from '../transport/agent-transport';
import { SocketAgentTransport } from './socket-agent-transport';

/**
 * Binds {@link AGENT_TRANSPORT} to the socket.io transport. A module of its own so that
 * RunsModule (which needs the transport) and GatewayModule (which needs RunsModule's
 * services) do not import each other.
 */
@Module({
  providers: [SocketAgentTransport, { provide: AGENT_TRANSPORT, useExisting: SocketAgentTransport }],
  exports: [SocketAgentTransport, AGENT_TRANSPORT],
})
export class SocketTransportModule {}
