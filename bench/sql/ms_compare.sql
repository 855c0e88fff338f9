\set ms random(1700000000000, 1900000000000)
SELECT :ms::bigint <= (extract(epoch FROM now()) * 1000)::bigint;
