-- purchase() takes the hot product's row lock last (sql/purchase.sql): it debits the wallet
-- and writes every row before its stock UPDATE. The keys that would lock the product early
-- are checked late or not at all (bench/purchase/RESULTS.md).
--
-- The order's foreign keys to products and stores are checked at COMMIT
-- (DEFERRABLE INITIALLY DEFERRED): checked at INSERT, before the UPDATE, the check would take
-- FOR KEY SHARE on the hot product row while another purchase holds it, and every such pair
-- of lockers is a new MultiXact on that row. At COMMIT the check reads a row this transaction
-- already holds. The keys are enforced exactly as before, only later in the transaction.
--
-- payouts.store_id loses its foreign key. It is a copy of the payout's order's store, kept for
-- the store's payouts index; the order's own key to stores already guarantees the store, and
-- the key could never catch the copy being wrong, only a store that does not exist. Checked
-- per row it was half the cost of writing a payout (the ledger tests check the copy instead).

ALTER TABLE orders ALTER CONSTRAINT orders_product_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orders ALTER CONSTRAINT orders_store_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE payouts DROP CONSTRAINT payouts_store_id_fkey;
