/**
 * The narrow interfaces between the gateway and the ShadowServer: the service looks up
 * the active enclave behind a control connection's source IP, and the gateway awaits
 * the service's teardown of an enclave's shadows before it releases the enclave IP.
 */
import type { Ipv4 } from '../util/ipv4.js';

/** What the ShadowServer needs to know about an active enclave. */
export interface ShadowEnclave {
  enclaveIp: Ipv4;
  /** The untrusted host's IP: the UDP source of the enclave's receive tunnel. */
  hostIp: Ipv4;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  appName: string | undefined;
  /** The gateway IP of the enclave's subnet. */
  gatewayIp: Ipv4;
}

export interface EnclaveLookup {
  /** The enclave that holds `ip` and is fully established, if any. */
  activeEnclave(ip: Ipv4): ShadowEnclave | undefined;
}

export interface ShadowHooks {
  /**
   * An enclave's session is ending: remove its shadows (DNAT rules, records, conntrack) and
   * resolve when no rule points at `ip` any more. The gateway awaits this before the IP
   * can be handed to another enclave.
   */
  enclaveEnding(ip: Ipv4): Promise<void>;
}
