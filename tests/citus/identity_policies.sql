-- The same policies on identity.sql's tables in schema :s (batches small enough to need many).
SELECT lifecycle.add_policy(:'s' || '_pats', (:'s' || '.useraccesstokens')::regclass, 'expiresat', time_kind => 'unix_ms',
                            audit => '{userid,id}', batch_size => 300, target_batch_time => NULL);
SELECT lifecycle.add_policy(:'s' || '_user_sessions', (:'s' || '.user_sessions')::regclass, 'finished_at', older_than => '30 days',
                            dependents => 'block', delete_from => ARRAY[:'s' || '.user_session_authentications(user_id, user_session_id)'],
                            audit => '{user_id,user_session_id}', batch_size => 100, target_batch_time => NULL,
                            -- A filter over the row: spliced into the batch on each worker, over the shard.
                            filter => 'created_at < finished_at');
