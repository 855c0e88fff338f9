\set ms random(1700000000000, 1900000000000)
SELECT lifecycle.token_is_expired(:ms::bigint);
