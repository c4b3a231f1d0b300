/** The 1 KB product JSON the cache benchmark stores for every library and sizing.ts weighs (the same shape each). */
export const PRODUCT = {
  id: 42,
  name: 'Product 42',
  tags: ['tea', 'green', 'organic'],
  description: 'x'.repeat(820),
  price: { amount: 1290, currency: 'EUR' },
  stock: [1, 2, 3, 4, 5, 6, 7, 8],
  updatedAt: '2026-11-23T12:00:00.000Z',
};
