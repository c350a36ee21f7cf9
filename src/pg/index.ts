/** PostgreSQL plumbing shared by the policy store and the fleet registry (docs/fleet.md). */
export * from './connection.js';
export * from './listener.js';
