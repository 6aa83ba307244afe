-- Why a product in this state cannot be bought, or NULL when it can: the refusal rule of both
-- purchase paths, in this order. An unavailable product (unlisted, its store inactive, or
-- priced in another currency than the marketplace's) is 404 to everyone, its seller included;
-- a store's owner cannot buy its products, whatever their price or stock; then a price other
-- than the one the buyer expected; then the stock. A queued purchase passes a NULL stock: the
-- worker checks stock when it applies the order, in arrival order.
--
-- An SQL expression the planner inlines into purchase()'s assignments.

CREATE OR REPLACE FUNCTION purchase_refusal_code(
    available boolean,
    own_product boolean,
    unit_price bigint,
    stock integer,
    quantity integer,
    expected_unit_price bigint
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT coalesce(available, false) THEN 'product_not_found'
        WHEN own_product THEN 'cannot_buy_own_product'
        WHEN expected_unit_price IS NOT NULL AND unit_price <> expected_unit_price
            THEN 'price_changed'
        WHEN stock < quantity THEN 'out_of_stock'
    END
$$;
