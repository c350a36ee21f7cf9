/**
 * The two SQLite layouts of SPEC §4, byte-compatible with the original SENG SQL
 * scripts: same table and column names, declared types and constraints. Addresses
 * and masks are INTEGERs in SPEC encoding (network bytes read little-endian, see
 * src/util/ipv4.ts `toWire`).
 */
export type SchemaKind = 'vanilla' | 'netfilter';

export const VANILLA_DDL = `
CREATE TABLE enclave_subnets(
  id INTEGER PRIMARY KEY,
  subnet INTEGER NOT NULL,
  submask INTEGER NOT NULL,
  gateway INTEGER,
  UNIQUE(subnet, submask)
);
CREATE TABLE apps(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  mr_enclave BLOB NOT NULL,
  mr_signer BLOB NOT NULL,
  host_subnet INTEGER NOT NULL,
  host_submask INTEGER NOT NULL,
  enc_subnet_id INTEGER NOT NULL REFERENCES enclave_subnets,
  UNIQUE(mr_enclave, host_subnet, host_submask)
);
`;

export const NETFILTER_DDL = `
CREATE TABLE apps(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  mr_enclave BLOB NOT NULL UNIQUE,
  mr_signer BLOB NOT NULL
);
CREATE TABLE categories(
  id INTEGER,
  name TEXT NOT NULL,
  apps_id INTEGER NOT NULL REFERENCES apps,
  UNIQUE(name, apps_id)
);
`;

/** Column names per table, in declaration order, used to recognise a layout. */
export const LAYOUTS: Record<SchemaKind, Record<string, string[]>> = {
  vanilla: {
    enclave_subnets: ['id', 'subnet', 'submask', 'gateway'],
    apps: ['id', 'name', 'mr_enclave', 'mr_signer', 'host_subnet', 'host_submask', 'enc_subnet_id'],
  },
  netfilter: {
    apps: ['id', 'name', 'mr_enclave', 'mr_signer'],
    categories: ['id', 'name', 'apps_id'],
  },
};

/**
 * Demo content of SPEC §4. The original scripts' measurements were those of their
 * own enclave builds; ours are fixed, documented values that `seng sim cert` can
 * reproduce, so `seng demo` and tests admit simulated enclaves of these apps.
 */
export const DEMO_MEASUREMENTS = {
  DemoEnclave: {
    mrEnclave: 'd923f5e1b2a8e7f0c4d3b6a9e8f7c2d1b0a9f8e7d6c5b4a3928170615f4ec3b0',
    mrSigner: '83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e',
  },
  NGINX: {
    mrEnclave: 'd5870b2f3e4c1a9d8b7f6e5d4c3b2a1908f7e6d5c4b3a29180706f5e4d3cf792',
    mrSigner: '83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e',
  },
} as const;
