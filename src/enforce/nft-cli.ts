/** The nft process runner moved to src/nft/cli.ts (below both policy and enforce). */
export * from '../nft/cli.js';
