\set s random(1700000000, 1900000000)
SELECT to_timestamp(:s) <= now();
