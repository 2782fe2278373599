import type { NamedTensors } from '@fedssl/shared/model';

/**
 * What a site keeps between rounds and NEVER uploads: the BYOL target network
 * (encoder + projector, EMA of the online one, same names as the shared specs) and the
 * metadata head, whose classes are this site's pseudonymous patients.
 */
export interface LocalState {
  target: NamedTensors;
  metadataHead: NamedTensors;
  metadataClasses: number;
}
